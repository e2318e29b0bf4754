"""mIoU from an accumulated confusion matrix, on hand-made maps."""

import math

import numpy as np
import pytest

from possam.training.metric_semantic_iou import SemanticIoUAccumulator


def test_hand_made_case():
    ground_truth = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    prediction = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])  # the last pixel is void in the gt: not counted
    accumulator = SemanticIoUAccumulator(num_classes=3)
    accumulator.update(prediction, ground_truth)
    result = accumulator.compute()
    # class 0: TP 3, FN 1, FP 0 -> 3/4; class 1: TP 3, FP 1 -> 3/4; class 2 absent from gt -> NaN, not averaged.
    np.testing.assert_allclose(result.per_class_iou[:2], [0.75, 0.75])
    assert math.isnan(result.per_class_iou[2])
    assert result.miou == pytest.approx(0.75)
    assert result.pixel_accuracy == pytest.approx(6 / 7)
    assert result.confusion.tolist() == [[3, 1, 0], [0, 3, 0], [0, 0, 0]]


def test_class_only_predicted_lowers_the_others_and_accumulation_is_over_pixels():
    accumulator = SemanticIoUAccumulator(num_classes=3, ignore_index=-1)
    accumulator.update(np.array([[0, 2]]), np.array([[0, 0]]))  # class 0: TP 1, FN 1 (predicted as 2)
    accumulator.update(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 0]]))  # class 1: TP 3, FP 1; class 0: FN 1
    result = accumulator.compute()
    # Summed: class 0 TP 1, FN 2 -> 1/3; class 1 TP 3, FP 1 -> 3/4. The mean of per-image mIoUs would differ.
    np.testing.assert_allclose(result.per_class_iou[:2], [1 / 3, 3 / 4])
    assert result.miou == pytest.approx((1 / 3 + 3 / 4) / 2)


def test_perfect_and_merge():
    rng = np.random.default_rng(0)
    maps = [rng.integers(0, 4, (6, 7)) for _ in range(3)]
    whole, first, second = SemanticIoUAccumulator(4), SemanticIoUAccumulator(4), SemanticIoUAccumulator(4)
    for index, label_map in enumerate(maps):
        prediction = np.where(rng.random(label_map.shape) < 0.8, label_map, rng.integers(0, 4, label_map.shape))
        whole.update(prediction, label_map)
        (first if index < 2 else second).update(prediction, label_map)
    first.merge(second)
    assert np.array_equal(first.compute().confusion, whole.compute().confusion)
    perfect = SemanticIoUAccumulator(4)
    perfect.update(maps[0], maps[0])
    assert perfect.compute().miou == 1.0


def test_bad_inputs():
    accumulator = SemanticIoUAccumulator(num_classes=2)
    with pytest.raises(ValueError, match=r"prediction has label ids in \[0, 5\]; expected 0..1"):
        accumulator.update(np.array([[0, 5]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="ground_truth has label ids"):
        accumulator.update(np.array([[0, 1]]), np.array([[0, 7]]))
    with pytest.raises(ValueError, match="1x3 but the ground truth is 1x2"):
        accumulator.update(np.array([[0, 1, 1]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="collides with a class id"):
        SemanticIoUAccumulator(num_classes=300, ignore_index=255)
    assert accumulator.confusion.sum() == 0
