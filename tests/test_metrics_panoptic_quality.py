"""PQ/SQ/RQ must equal COCO's official panopticapi `pq_compute_single_core` (PyPI panopticapi-lite==0.2.0)."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from possam.training.metric_panoptic_quality import (
    EVALUATE_METRIC_DIR,
    PanopticQualityAccumulator,
    panoptic_quality,
)
from possam.processing.panoptic_png import segment_ids_to_rgb

from panopticapi.evaluation import pq_compute_single_core


# 4 thing and 4 stuff classes with non-contiguous dataset ids; label 3 and 7 only ever appear in predictions.
IS_THING = [True, True, True, True, False, False, False, False]
DATASET_IDS = [3, 5, 8, 13, 21, 34, 55, 89]
GT_LABELS = [0, 1, 2, 4, 5, 6]


def _voronoi(points: np.ndarray, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    distances = (yy[None] - points[:, 0, None, None]) ** 2 + (xx[None] - points[:, 1, None, None]) ** 2
    return distances.argmin(axis=0)


def _random_case(rng: np.random.Generator, height: int = 40, width: int = 56):
    """A ground truth with void and crowd regions and a noisy prediction of it (maps + segments_info)."""
    num_cells = int(rng.integers(6, 14))
    points = rng.uniform([0, 0], [height, width], size=(num_cells, 2))
    gt_cells = _voronoi(points, height, width)
    gt_ids = rng.choice(np.arange(1, 256**3), size=num_cells, replace=False)
    gt_map = gt_ids[gt_cells]
    gt_labels = rng.choice(GT_LABELS, size=num_cells)
    crowd = rng.random(num_cells) < 0.2
    # Two crowd regions of one class in one image exercise panopticapi's "last crowd region per class" rule.
    if num_cells >= 8 and rng.random() < 0.5:
        gt_labels[[0, 1]] = 1
        crowd[[0, 1]] = True
    for _ in range(int(rng.integers(0, 3))):  # void rectangles
        top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
        gt_map[top : top + int(rng.integers(3, 12)), left : left + int(rng.integers(3, 16))] = 0
    gt_segments = [
        {"id": int(gt_ids[k]), "label_id": int(gt_labels[k]), "iscrowd": int(crowd[k])}
        for k in range(num_cells)
        if (gt_map == gt_ids[k]).any()
    ]

    # Prediction: the same cells with jittered centres (IoUs spread around 0.5), mostly the right class.
    jitter = rng.normal(0.0, rng.uniform(1.0, 6.0), size=points.shape)
    pred_cells = _voronoi(points + jitter, height, width)
    pred_labels = np.where(rng.random(num_cells) < 0.75, gt_labels, rng.integers(0, len(IS_THING), size=num_cells))
    pred_ids = rng.choice(np.arange(1, 256**3), size=num_cells, replace=False)
    pred_map = pred_ids[pred_cells]
    if rng.random() < 0.5:  # a region without prediction
        top, left = rng.integers(0, height - 10), rng.integers(0, width - 10)
        pred_map[top : top + 10, left : left + 10] = 0
    pred_segments = [
        {"id": int(pred_ids[k]), "label_id": int(pred_labels[k])}
        for k in range(num_cells)
        if (pred_map == pred_ids[k]).any()
    ]
    return gt_map, gt_segments, pred_map, pred_segments


def _exact_half_case():
    """gt segment of 4 pixels; the prediction covers 2 of them plus 2 void pixels: IoU = 2 / (4 + 4 - 2 - 2) = 0.5."""
    gt_map = np.array([[1, 1, 1, 1, 0, 0], [2, 2, 2, 2, 2, 2]])
    pred_map = np.array([[3, 3, 4, 4, 3, 3], [5, 5, 5, 5, 5, 5]])
    gt_segments = [{"id": 1, "label_id": 0, "iscrowd": 0}, {"id": 2, "label_id": 4, "iscrowd": 0}]
    pred_segments = [{"id": 3, "label_id": 0}, {"id": 4, "label_id": 1}, {"id": 5, "label_id": 4}]
    return gt_map, gt_segments, pred_map, pred_segments


def _reference(tmp_path, cases):
    """Runs panopticapi on the cases written as COCO panoptic PNGs + segments_info."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(exist_ok=True)
    pred_dir.mkdir(exist_ok=True)
    pairs = []
    for index, (gt_map, gt_segments, pred_map, pred_segments) in enumerate(cases):
        name = f"{index:04d}.png"
        Image.fromarray(segment_ids_to_rgb(gt_map)).save(gt_dir / name)
        Image.fromarray(segment_ids_to_rgb(pred_map)).save(pred_dir / name)
        gt_annotation = {
            "image_id": index,
            "file_name": name,
            "segments_info": [
                {
                    "id": s["id"],
                    "category_id": DATASET_IDS[s["label_id"]],
                    "iscrowd": s["iscrowd"],
                    "area": int((gt_map == s["id"]).sum()),
                }
                for s in gt_segments
            ],
        }
        pred_annotation = {
            "image_id": index,
            "file_name": name,
            "segments_info": [{"id": s["id"], "category_id": DATASET_IDS[s["label_id"]]} for s in pred_segments],
        }
        # Through JSON, as panopticapi reads its annotations.
        pairs.append((json.loads(json.dumps(gt_annotation)), json.loads(json.dumps(pred_annotation))))
    categories = {
        dataset_id: {"id": dataset_id, "name": f"class{dataset_id}", "isthing": int(thing)}
        for dataset_id, thing in zip(DATASET_IDS, IS_THING)
    }
    stat = pq_compute_single_core(0, pairs, str(gt_dir), str(pred_dir), categories)
    return stat, categories


def _assert_equal_to_reference(ours, stat, categories):
    for label, dataset_id in enumerate(DATASET_IDS):
        assert ours.tp[label] == stat[dataset_id].tp, label
        assert ours.fp[label] == stat[dataset_id].fp, label
        assert ours.fn[label] == stat[dataset_id].fn, label
        assert ours.iou_sum[label] == stat[dataset_id].iou, label
    for scores, isthing in ((ours.all, None), (ours.things, True), (ours.stuff, False)):
        reference, per_class = stat.pq_average(categories, isthing=isthing)
        assert scores.n == reference["n"]
        # Bit-identical: same statistics, same summation order.
        assert (scores.pq, scores.sq, scores.rq) == (reference["pq"], reference["sq"], reference["rq"])
        for label, dataset_id in enumerate(DATASET_IDS):
            if dataset_id in per_class:
                expected = per_class[dataset_id]
                got = ours.per_class[label]
                assert (got.pq, got.sq, got.rq) == (expected["pq"], expected["sq"], expected["rq"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pq_equals_panopticapi_on_random_cases(tmp_path, seed, capsys):
    rng = np.random.default_rng(seed)
    cases = [_random_case(rng) for _ in range(6)] + [_exact_half_case()]
    stat, categories = _reference(tmp_path, cases)
    ours = panoptic_quality(*zip(*cases), is_thing=IS_THING)
    _assert_equal_to_reference(ours, stat, categories)
    # The cases must exercise what they are meant to: crowd, void, FPs, FNs, classes only predicted.
    assert ours.tp.sum() > 0 and ours.fp.sum() > 0 and ours.fn.sum() > 0
    assert any(s["iscrowd"] for case in cases for s in case[1])
    assert ours.fp[3] + ours.fp[7] > 0 and ours.per_class[3].n + ours.per_class[7].n > 0  # predicted-only classes


def test_iou_of_exactly_one_half_does_not_match(tmp_path, capsys):
    ours = panoptic_quality(*zip(_exact_half_case()), is_thing=IS_THING)
    # Class 0: the IoU-0.5 pair is no match -> 1 FN, and the prediction (2 of 4 pixels on void: not > 0.5) is 1 FP.
    assert (ours.tp[0], ours.fp[0], ours.fn[0]) == (0, 1, 1)
    # Class 1's prediction lies on gt segment 1 only (no void): a false positive.
    assert (ours.tp[1], ours.fp[1], ours.fn[1]) == (0, 1, 0)
    assert (ours.tp[4], ours.iou_sum[4]) == (1, 1.0)
    stat, categories = _reference(tmp_path, [_exact_half_case()])
    _assert_equal_to_reference(ours, stat, categories)


def test_just_above_one_half_matches():
    # gt 4 pixels, prediction covers 3 of them + 2 void pixels: IoU = 3 / (5 + 4 - 3 - 2) = 0.75.
    gt_map = np.array([[1, 1, 1, 1, 0, 0]])
    pred_map = np.array([[3, 3, 3, 4, 3, 3]])
    result = panoptic_quality(
        [gt_map],
        [[{"id": 1, "label_id": 0, "iscrowd": 0}]],
        [pred_map],
        [[{"id": 3, "label_id": 0}, {"id": 4, "label_id": 1}]],
        is_thing=[True, True],
    )
    assert result.tp[0] == 1 and result.iou_sum[0] == 0.75
    assert result.all.pq == pytest.approx((0.75 / 1 + 0.0) / 2)  # class 1: one FP -> PQ 0


def test_prediction_mostly_on_crowd_of_same_class_is_not_a_false_positive():
    gt_map = np.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    gt_segments = [{"id": 1, "label_id": 0, "iscrowd": 1}, {"id": 2, "label_id": 1, "iscrowd": 0}]
    pred_map = np.array([[5, 5, 5, 6, 6, 6, 6, 6]])
    same_class = panoptic_quality(
        [gt_map], [gt_segments], [pred_map], [[{"id": 5, "label_id": 0}, {"id": 6, "label_id": 1}]], [True, True]
    )
    assert (same_class.fp[0], same_class.fn[0], same_class.tp[0]) == (0, 0, 0)  # ignored, crowd never an FN
    assert same_class.tp[1] == 1
    other_class = panoptic_quality(
        [gt_map], [gt_segments], [pred_map], [[{"id": 5, "label_id": 1}, {"id": 6, "label_id": 1}]], [True, True]
    )
    assert other_class.fp[1] == 1  # crowd of another class does not excuse it


def test_perfect_prediction_and_group_means():
    gt_map = np.array([[1, 1, 2, 2], [3, 3, 0, 0]])
    segments = [
        {"id": 1, "label_id": 0, "iscrowd": 0},
        {"id": 2, "label_id": 1, "iscrowd": 0},
        {"id": 3, "label_id": 2, "iscrowd": 0},
    ]
    result = panoptic_quality(
        [gt_map],
        [segments],
        [gt_map * 7],
        [[{"id": s["id"] * 7, "label_id": s["label_id"]} for s in segments]],
        [True, False, False, True],
    )
    assert (result.all.pq, result.all.sq, result.all.rq, result.all.n) == (1.0, 1.0, 1.0, 3)
    assert (result.things.n, result.stuff.n) == (1, 2)
    assert result.per_class[3].n == 0  # absent class is not averaged


def test_empty_group_is_nan():
    gt_map = np.array([[1, 1]])
    result = panoptic_quality(
        [gt_map], [[{"id": 1, "label_id": 0, "iscrowd": 0}]], [gt_map], [[{"id": 1, "label_id": 0}]], [True, False]
    )
    assert result.things.pq == 1.0 and math.isnan(result.stuff.pq) and result.stuff.n == 0


def test_accumulator_merge_equals_single_pass():
    rng = np.random.default_rng(7)
    cases = [_random_case(rng) for _ in range(4)]
    whole = panoptic_quality(*zip(*cases), is_thing=IS_THING)
    first, second = PanopticQualityAccumulator(IS_THING), PanopticQualityAccumulator(IS_THING)
    for case in cases[:2]:
        first.update(*case)
    for case in cases[2:]:
        second.update(*case)
    first.merge(second)
    merged = first.compute()
    np.testing.assert_array_equal(merged.tp, whole.tp)
    np.testing.assert_allclose(merged.iou_sum, whole.iou_sum, rtol=1e-12)


@pytest.mark.parametrize(
    "pred_map, pred_segments, match",
    [
        (np.array([[1, 9]]), [{"id": 1, "label_id": 0}], r"segment ids \[9\] that are not in pred_segments"),
        (np.array([[1, 1]]), [{"id": 1, "label_id": 0}, {"id": 2, "label_id": 0}], r"\[2\] that cover no pixel"),
        (np.array([[1, 1]]), [{"id": 1, "label_id": 5}], "label_id 5 is outside"),
        (np.array([[1, 1, 1]]), [{"id": 1, "label_id": 0}], "1x3 but the ground truth is 1x2"),
        (np.array([[1, 1]]), [{"id": 1, "label_id": 0}, {"id": 1, "label_id": 0}], "duplicate segment ids"),
    ],
)
def test_bad_predictions_raise_clear_errors(pred_map, pred_segments, match):
    accumulator = PanopticQualityAccumulator([True, False])
    with pytest.raises(ValueError, match=match):
        accumulator.update(np.array([[1, 1]]), [{"id": 1, "label_id": 0, "iscrowd": 0}], pred_map, pred_segments)


def test_evaluate_module_loads_offline_and_matches(tmp_path):
    import evaluate

    assert os.path.isfile(os.path.join(EVALUATE_METRIC_DIR, "panoptic_quality.py"))
    metric = evaluate.load(EVALUATE_METRIC_DIR)
    rng = np.random.default_rng(11)
    cases = [_random_case(rng) for _ in range(3)]
    for gt_map, gt_segments, pred_map, pred_segments in cases:
        metric.add(
            predictions=pred_map.tolist(),
            references=gt_map.tolist(),
            prediction_segments_info=pred_segments,
            reference_segments_info=gt_segments,
        )
    result = metric.compute(is_thing=IS_THING)
    expected = panoptic_quality(*zip(*cases), is_thing=IS_THING)
    assert result["pq"] == pytest.approx(100 * expected.all.pq, rel=1e-12)
    assert result["sq_things"] == pytest.approx(100 * expected.things.sq, rel=1e-12)
    assert result["rq_stuff"] == pytest.approx(100 * expected.stuff.rq, rel=1e-12)
    assert result["n"] == expected.all.n
    assert len(result["per_class_pq"]) == len(IS_THING) and "pq_seen" not in result


IS_SEEN = [True, False, True, False, False, True, True, False]  # things and stuff on both sides


@pytest.mark.parametrize("seed", [4, 5])
def test_seen_and_unseen_scores_equal_panopticapi_on_the_class_subsets(tmp_path, seed):
    rng = np.random.default_rng(seed)
    cases = [_random_case(rng) for _ in range(6)]
    stat, categories = _reference(tmp_path, cases)
    accumulator = PanopticQualityAccumulator(IS_THING, is_seen=IS_SEEN)
    for gt_map, gt_segments, pred_map, pred_segments in cases:
        accumulator.update(gt_map, gt_segments, pred_map, pred_segments)
    ours = accumulator.compute()
    for scores, seen in ((ours.seen, True), (ours.unseen, False)):
        subset = {dataset_id: category for (dataset_id, category), flag in zip(categories.items(), IS_SEEN) if flag == seen}
        reference, _ = stat.pq_average(subset, isthing=None)
        assert scores.n == reference["n"] > 0
        assert (scores.pq, scores.sq, scores.rq) == pytest.approx((reference["pq"], reference["sq"], reference["rq"]), rel=1e-12)
    assert ours.seen != ours.unseen
    assert panoptic_quality(*zip(*cases), is_thing=IS_THING).seen is None  # only when the seen classes are given
    with pytest.raises(ValueError, match="is_seen has 2 flags for 8 classes"):
        PanopticQualityAccumulator(IS_THING, is_seen=[True, False])
