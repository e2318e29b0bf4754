"""PanopticEvaluator: post-processing outputs + decoded ground truth -> one dict of PQ / mAP / mIoU (percent)."""

import math

import numpy as np
import pytest
import torch

from possam.training.coco_panoptic import decode_panoptic_example, load_coco_panoptic
from possam.training.metric_mask_ap import MaskAPAccumulator
from possam.training.metric_panoptic_quality import panoptic_quality
from possam.training.metric_semantic_iou import SemanticIoUAccumulator
from possam.training.panoptic_evaluator import PanopticEvaluator, semantic_map_from_panoptic
from possam.training.synthetic import generate_synthetic_coco_panoptic


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    synthetic = generate_synthetic_coco_panoptic(tmp_path_factory.mktemp("eval"), num_images=5, image_size=48, seed=4)
    dataset, vocabulary = load_coco_panoptic(synthetic.json_path, synthetic.image_dir, synthetic.panoptic_dir)
    return [decode_panoptic_example(row) for row in dataset], vocabulary


def _ground_truth(example):
    return {"segmentation": example.segment_ids, "segments_info": example.segments_info}


def _outputs(example, vocabulary, drop_one_thing=False):
    """Post-processing-style outputs that reproduce the ground truth (optionally missing one thing instance)."""
    ids = example.segment_ids
    things = [s for s in example.segments_info if vocabulary.is_thing[s["label_id"]] and not s["iscrowd"]]
    dropped = things[0]["id"] if drop_one_thing else None
    segmentation = torch.from_numpy(np.where(ids == 0, -1, ids * 3)).to(torch.int32)  # -1 = no segment
    segments_info = []
    for segment in example.segments_info:
        if segment["id"] == dropped:
            segmentation[torch.from_numpy(ids == dropped)] = -1
            continue
        segments_info.append(
            {"id": segment["id"] * 3, "label_id": segment["label_id"], "score": 0.9, "was_fused": False}
        )
    instances = [
        {"mask": torch.from_numpy(ids == s["id"]), "label_id": s["label_id"], "score": 0.8}
        for s in things
        if s["id"] != dropped
    ]
    semantic = semantic_map_from_panoptic(ids, example.segments_info, ignore_index=255)
    semantic[semantic == 255] = 0
    if dropped is not None:
        semantic[ids == dropped] = vocabulary.stuff_label_ids[0]
    return {"segmentation": segmentation, "segments_info": segments_info}, instances, torch.from_numpy(semantic)


def test_perfect_outputs_score_100(examples):
    decoded, vocabulary = examples
    evaluator = PanopticEvaluator(vocabulary)
    for example in decoded:
        panoptic, instances, semantic = _outputs(example, vocabulary)
        evaluator.update(_ground_truth(example), panoptic=panoptic, instances=instances, semantic=semantic)
    metrics = evaluator.compute()
    assert set(metrics) == {
        "pq",
        "sq",
        "rq",
        "pq_things",
        "sq_things",
        "rq_things",
        "pq_stuff",
        "sq_stuff",
        "rq_stuff",
        "map",
        "ap50",
        "ap75",
        "miou",
        "pacc",
    }
    for key, value in metrics.items():
        assert value == pytest.approx(100.0), key
    assert evaluator.num_images == 5


def test_imperfect_outputs_equal_the_individual_metrics(examples):
    decoded, vocabulary = examples
    evaluator = PanopticEvaluator(vocabulary)
    gt_maps, gt_infos, pred_maps, pred_infos = [], [], [], []
    ap, miou = MaskAPAccumulator(vocabulary.is_thing), SemanticIoUAccumulator(len(vocabulary))
    for example in decoded:
        panoptic, instances, semantic = _outputs(example, vocabulary, drop_one_thing=True)
        evaluator.update(_ground_truth(example), panoptic=panoptic, instances=instances, semantic=semantic)
        gt_maps.append(example.segment_ids)
        gt_infos.append(example.segments_info)
        pred_maps.append(panoptic["segmentation"].clamp(min=0).numpy())
        pred_infos.append(panoptic["segments_info"])
        ap.update(example.segment_ids, example.segments_info, instances)
        miou.update(semantic, semantic_map_from_panoptic(example.segment_ids, example.segments_info))
    metrics = evaluator.compute()
    pq = panoptic_quality(gt_maps, gt_infos, pred_maps, pred_infos, vocabulary.is_thing)
    assert metrics["pq"] == pytest.approx(100 * pq.all.pq) and metrics["pq"] < 100
    assert metrics["rq_things"] == pytest.approx(100 * pq.things.rq) and metrics["rq_things"] < 100
    assert metrics["sq_things"] == pytest.approx(100.0)  # the matched segments are exact
    assert metrics["pq_stuff"] == pytest.approx(100 * pq.stuff.pq)
    assert metrics["map"] == pytest.approx(100 * ap.compute().ap) and metrics["map"] < 100
    assert metrics["miou"] == pytest.approx(100 * miou.compute().miou) and metrics["miou"] < 100


def test_only_given_outputs_are_reported_and_must_be_consistent(examples):
    decoded, vocabulary = examples
    evaluator = PanopticEvaluator(is_thing=vocabulary.is_thing)
    panoptic, instances, semantic = _outputs(decoded[0], vocabulary)
    evaluator.update(_ground_truth(decoded[0]), semantic=semantic)
    assert set(evaluator.compute()) == {"miou", "pacc"}
    with pytest.raises(
        ValueError, match=r"first image gave \(panoptic, instances, semantic\) = \(False, False, True\)"
    ):
        evaluator.update(_ground_truth(decoded[1]), panoptic=panoptic, semantic=semantic)
    evaluator.reset()
    with pytest.raises(ValueError, match="call update"):
        evaluator.compute()
    with pytest.raises(ValueError, match="at least one of panoptic, instances or semantic"):
        evaluator.update(_ground_truth(decoded[0]))
    with pytest.raises(ValueError, match="needs a 'segmentation'"):
        evaluator.update({"segments_info": []}, semantic=semantic)
    with pytest.raises(ValueError, match="Give exactly one of vocabulary or is_thing"):
        PanopticEvaluator()


def test_semantic_ground_truth_from_panoptic():
    ids = np.array([[0, 4, 4], [7, 7, 9]])
    info = [
        {"id": 4, "label_id": 2, "iscrowd": 0},
        {"id": 7, "label_id": 0, "iscrowd": 1},
        {"id": 9, "label_id": 1, "iscrowd": 0},
    ]
    assert semantic_map_from_panoptic(ids, info).tolist() == [[255, 2, 2], [0, 0, 1]]


def test_nan_for_absent_stuff_group():
    evaluator = PanopticEvaluator(is_thing=[True, False])
    ids = np.array([[1, 1], [0, 0]])
    evaluator.update(
        {"segmentation": ids, "segments_info": [{"id": 1, "label_id": 0, "iscrowd": 0}]},
        panoptic={"segmentation": ids, "segments_info": [{"id": 1, "label_id": 0, "score": 1.0}]},
    )
    metrics = evaluator.compute()
    assert metrics["pq"] == 100.0 and math.isnan(metrics["pq_stuff"])


def test_seen_and_unseen_classes_are_averaged_separately(examples):
    decoded, vocabulary = examples
    # Seen: the first thing class and the first stuff class, by name (any synonym counts, case-insensitive).
    seen_names = [vocabulary.entries[vocabulary.is_thing.index(True)].split(",")[-1].upper(),
                  vocabulary.entries[vocabulary.is_thing.index(False)]]
    by_name = PanopticEvaluator(vocabulary, seen_classes=seen_names)
    flags = [index in (vocabulary.is_thing.index(True), vocabulary.is_thing.index(False)) for index in range(len(vocabulary))]
    by_flags = PanopticEvaluator(is_thing=vocabulary.is_thing, seen_classes=flags)
    without = PanopticEvaluator(vocabulary)
    gt_maps, gt_infos, pred_maps, pred_infos = [], [], [], []
    for example in decoded:
        panoptic, instances, semantic = _outputs(example, vocabulary, drop_one_thing=True)
        for evaluator in (by_name, by_flags, without):
            evaluator.update(_ground_truth(example), panoptic=panoptic)
        gt_maps.append(example.segment_ids)
        gt_infos.append(example.segments_info)
        pred_maps.append(panoptic["segmentation"].clamp(min=0).numpy())
        pred_infos.append(panoptic["segments_info"])
    metrics = by_name.compute()
    assert metrics == by_flags.compute()
    assert set(metrics) - set(without.compute()) == {f"{m}_{g}" for m in ("pq", "sq", "rq") for g in ("seen", "unseen")}
    # By hand: the mean of the per-class scores over each subset of the classes that occur.
    per_class = panoptic_quality(gt_maps, gt_infos, pred_maps, pred_infos, vocabulary.is_thing).per_class
    for group, selected in (("seen", flags), ("unseen", [not flag for flag in flags])):
        scores = [per_class[label] for label in range(len(vocabulary)) if selected[label] and per_class[label].n]
        assert metrics[f"pq_{group}"] == pytest.approx(100 * sum(s.pq for s in scores) / len(scores))
        assert metrics[f"rq_{group}"] == pytest.approx(100 * sum(s.rq for s in scores) / len(scores))
    with pytest.raises(ValueError, match="need the evaluated vocabulary"):
        PanopticEvaluator(is_thing=vocabulary.is_thing, seen_classes=["ball"])
    with pytest.raises(ValueError, match=r"must be \d+ bools"):
        PanopticEvaluator(vocabulary, seen_classes=[True])
