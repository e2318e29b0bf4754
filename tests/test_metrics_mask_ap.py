"""Mask AP on thing classes through pycocotools, on cases whose AP can be worked out by hand."""

import math

import numpy as np
import pytest

from possam.training.metric_mask_ap import MaskAPAccumulator


IS_THING = [True, True, False]  # labels 0, 1 are things, 2 is stuff


def _box(top, left, height, width, shape=(40, 40)):
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


def _ground_truth():
    """Two instances of class 0, one of class 1, a crowd region of class 0 and a stuff background."""
    ids = np.full((40, 40), 9, dtype=np.int64)  # stuff
    ids[2:12, 2:12] = 1
    ids[20:30, 2:12] = 2
    ids[2:12, 20:32] = 3
    ids[25:38, 25:38] = 4  # crowd
    ids[0, :] = 0  # void
    segments = [
        {"id": 1, "label_id": 0, "iscrowd": 0},
        {"id": 2, "label_id": 0, "iscrowd": 0},
        {"id": 3, "label_id": 1, "iscrowd": 0},
        {"id": 4, "label_id": 0, "iscrowd": 1},
        {"id": 9, "label_id": 2, "iscrowd": 0},
    ]
    return ids, segments


def _perfect(ids, segments):
    return [
        {"mask": ids == s["id"], "label_id": s["label_id"], "score": 0.9}
        for s in segments
        if IS_THING[s["label_id"]] and not s["iscrowd"]
    ]


def test_perfect_predictions_give_ap_one():
    ids, segments = _ground_truth()
    accumulator = MaskAPAccumulator(IS_THING)
    accumulator.update(ids, segments, _perfect(ids, segments))
    accumulator.update(ids, segments, _perfect(ids, segments))
    result = accumulator.compute()
    assert result.ap == pytest.approx(1.0) and result.ap50 == pytest.approx(1.0) and result.ap75 == pytest.approx(1.0)


def test_no_predictions_give_ap_zero():
    ids, segments = _ground_truth()
    accumulator = MaskAPAccumulator(IS_THING)
    accumulator.update(ids, segments, [])
    assert accumulator.compute().ap == 0.0


def test_one_hit_one_false_positive_one_miss():
    """Class 0 only: 2 gt; detections: a perfect hit (score 0.9) and a false positive (0.8).

    Precision/recall: (1.0, 0.5) then (0.5, 0.5). COCO's 101-point interpolated precision is 1.0 for the 51 recall
    thresholds 0.00..0.50 and 0 above: AP = 51 / 101 at every IoU threshold.
    """
    ids, segments = _ground_truth()
    segments = [s for s in segments if s["label_id"] != 1]
    detections = [
        {"mask": ids == 1, "label_id": 0, "score": 0.9},
        {"mask": _box(14, 14, 5, 5), "label_id": 0, "score": 0.8},
    ]
    accumulator = MaskAPAccumulator(IS_THING)
    accumulator.update(ids, segments, detections)
    assert accumulator.compute().ap == pytest.approx(51 / 101)

    # The false positive ranked first: interpolated precision is 0.5 up to recall 0.5.
    detections[1]["score"] = 0.95
    accumulator = MaskAPAccumulator(IS_THING)
    accumulator.update(ids, segments, detections)
    assert accumulator.compute().ap == pytest.approx(0.5 * 51 / 101)


def test_partial_overlap_counts_only_at_low_iou_thresholds():
    """One gt of 100 px; the detection covers it plus 60 px: IoU = 0.625 -> hit at 0.50, 0.55, 0.60 only."""
    ids = np.zeros((40, 40), dtype=np.int64)
    ids[5:15, 5:15] = 1
    mask = _box(5, 5, 10, 16)  # 160 px, 100 of them on the gt
    accumulator = MaskAPAccumulator([True])
    accumulator.update(ids, [{"id": 1, "label_id": 0, "iscrowd": 0}], [{"mask": mask, "label_id": 0, "score": 0.5}])
    result = accumulator.compute()
    assert result.ap == pytest.approx(3 / 10) and result.ap50 == pytest.approx(1.0) and result.ap75 == 0.0


def test_detections_on_crowd_and_of_stuff_classes_are_ignored():
    ids, segments = _ground_truth()
    detections = _perfect(ids, segments) + [
        {"mask": ids == 4, "label_id": 0, "score": 0.99},  # on the crowd region: neither TP nor FP
        {"mask": ids == 9, "label_id": 2, "score": 0.99},  # stuff class: not part of instance AP
    ]
    accumulator = MaskAPAccumulator(IS_THING)
    accumulator.update(ids, segments, detections)
    assert accumulator.compute().ap == pytest.approx(1.0)


def test_wrong_class_is_a_miss_and_mean_is_over_classes():
    ids, segments = _ground_truth()
    detections = _perfect(ids, segments)
    detections[2]["label_id"] = 0  # the class-1 instance predicted as class 0
    accumulator = MaskAPAccumulator(IS_THING)
    accumulator.update(ids, segments, detections)
    # class 0: 2 hits (0.9) and 1 FP (0.9, equal score, ranked after the hits by COCOeval's stable sort) -> AP 1;
    # class 1: no detection -> AP 0. Mean = 0.5.
    assert accumulator.compute().ap == pytest.approx(0.5)


def test_no_thing_ground_truth_gives_nan():
    ids = np.ones((8, 8), dtype=np.int64)
    accumulator = MaskAPAccumulator(IS_THING)
    accumulator.update(ids, [{"id": 1, "label_id": 2, "iscrowd": 0}], [])
    assert math.isnan(accumulator.compute().ap)


def test_bad_inputs():
    ids, segments = _ground_truth()
    accumulator = MaskAPAccumulator(IS_THING)
    with pytest.raises(ValueError, match=r"mask is 4x4 but the ground truth is 40x40"):
        accumulator.update(ids, segments, [{"mask": np.ones((4, 4), bool), "label_id": 0, "score": 1.0}])
    with pytest.raises(ValueError, match="label_id 7 is outside 0..2"):
        accumulator.update(ids, segments, [{"mask": ids == 1, "label_id": 7, "score": 1.0}])


def test_failed_update_leaves_state_unchanged_and_merge_equals_single_pass():
    ids, segments = _ground_truth()
    detections = _perfect(ids, segments)
    detections[0]["score"] = 0.1
    detections.append({"mask": _box(14, 14, 5, 5), "label_id": 1, "score": 0.95})
    single = MaskAPAccumulator(IS_THING)
    single.update(ids, segments, _perfect(ids, segments))
    with pytest.raises(ValueError):
        single.update(ids, segments, [{"mask": np.ones((2, 2), bool), "label_id": 0, "score": 1.0}])
    single.update(ids, segments, detections)
    first, second = MaskAPAccumulator(IS_THING), MaskAPAccumulator(IS_THING)
    first.update(ids, segments, _perfect(ids, segments))
    second.update(ids, segments, detections)
    first.merge(second)
    assert first.compute() == single.compute()
    assert 0.0 < single.compute().ap < 1.0
