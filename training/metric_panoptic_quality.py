"""Panoptic quality (PQ = SQ x RQ) with exactly the semantics of COCO's official `pq_compute` (panopticapi).

Per image, for ground truth (gt) and predicted segment-id maps:
- a gt segment and a predicted segment of the same class match when IoU > 0.5 (strictly), where the union leaves
  out the predicted pixels that lie on gt void (id 0); matches are unique because segments do not overlap;
- unmatched non-crowd gt segments are false negatives; crowd gt segments never match and never count;
- an unmatched predicted segment is a false positive unless more than half of its area lies on gt void plus the
  crowd region of its own class (panopticapi keeps one crowd region per class: the last one in segments_info).
Statistics are summed per class over the whole dataset; PQ_c = sum IoU / (TP + FP/2 + FN/2), SQ_c = sum IoU / TP,
RQ_c = TP / (TP + FP/2 + FN/2); the reported PQ/SQ/RQ are unweighted means over the classes with TP + FP + FN > 0
(all classes, things only, stuff only). Values are fractions in [0, 1], as panopticapi returns them.

Implementation: each map is turned into compact segment indices (searchsorted against the sorted segment ids) and
one `bincount` gives the gt x prediction intersection table, so an image costs O(H x W) plus O(#gt x #pred).
IoUs are summed in panopticapi's order (by gt id, then prediction id), so results are bit-identical to it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


# Folder of the `evaluate` wrapper of this metric: `evaluate.load(EVALUATE_METRIC_DIR)` works offline.
EVALUATE_METRIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "panoptic_quality")


@dataclass(frozen=True)
class PanopticQualityScores:
    """PQ, SQ, RQ (fractions) and `n`, the number of classes averaged (TP + FP + FN > 0)."""

    pq: float
    sq: float
    rq: float
    n: int


@dataclass(frozen=True)
class PanopticQualityResult:
    """Dataset-level panoptic quality.

    Attributes:
        all, things, stuff: means over the classes of each group that occur (NaN when none occurs).
        seen, unseen: the same over the classes seen / not seen in training, when the accumulator knows them
            (`is_seen`), else `None`.
        per_class: scores per contiguous label id (`n` = 1 if the class occurs, else 0 and all scores 0).
        tp, fp, fn, iou_sum: the per-class statistics behind the scores, each of length C.
    """

    all: PanopticQualityScores
    things: PanopticQualityScores
    stuff: PanopticQualityScores
    per_class: list[PanopticQualityScores]
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou_sum: np.ndarray
    seen: PanopticQualityScores | None = None
    unseen: PanopticQualityScores | None = None

    def groups(self) -> list[tuple[str, PanopticQualityScores]]:
        """`(suffix, scores)` per reported group, suffixes as in metric names: "", "_things", "_stuff", and
        "_seen", "_unseen" when seen classes are known (`pq_seen`, ...)."""
        groups = [("", self.all), ("_things", self.things), ("_stuff", self.stuff)]
        if self.seen is not None:
            groups += [("_seen", self.seen), ("_unseen", self.unseen)]
        return groups


def _to_numpy_map(segment_ids, name: str) -> np.ndarray:
    array = np.asarray(segment_ids.cpu() if hasattr(segment_ids, "cpu") else segment_ids)
    if array.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) segment-id map, got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer segment ids, got dtype {array.dtype}.")
    return array.astype(np.int64, copy=False)


def _segment_table(segments: Sequence[Mapping], num_classes: int, name: str, with_crowd: bool):
    """Sorted segment ids, their label ids and crowd flags (sorted order), plus the segments_info order."""
    ids = np.array([int(segment["id"]) for segment in segments], dtype=np.int64)
    if ids.size and ids.min() <= 0:
        raise ValueError(f"{name}: segment ids must be > 0 (0 is void), got {ids.min()}.")
    if np.unique(ids).size != ids.size:
        raise ValueError(f"{name}: duplicate segment ids in segments_info.")
    labels = np.array([int(segment["label_id"]) for segment in segments], dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(f"{name}: label_id {int(bad[0])} is outside the vocabulary's 0..{num_classes - 1}.")
    crowd = np.array([int(segment.get("iscrowd", 0)) == 1 for segment in segments], dtype=bool) if with_crowd else None
    order = np.argsort(ids, kind="stable")
    return ids[order], labels[order], (crowd[order] if with_crowd else None), order


def _compact(segment_map: np.ndarray, sorted_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: 1 + index into `sorted_ids`, or 0 where the id is not listed. Also returns the `listed` mask."""
    if sorted_ids.size == 0:
        return np.zeros(segment_map.shape, dtype=np.int64), np.zeros(segment_map.shape, dtype=bool)
    position = np.searchsorted(sorted_ids, segment_map)
    listed = sorted_ids[np.minimum(position, sorted_ids.size - 1)] == segment_map
    return np.where(listed, position + 1, 0), listed


class PanopticQualityAccumulator:
    """Accumulates per-class PQ statistics image by image; `compute()` gives the dataset-level scores.

    Args:
        is_thing: per contiguous label id, whether the class is a thing (else stuff).
        is_seen: per contiguous label id, whether the class was seen in training; when given, `compute()` also
            averages over the seen and the unseen classes (open-vocabulary evaluation).
    """

    def __init__(self, is_thing: Sequence[bool], is_seen: Sequence[bool] | None = None):
        self.is_thing = np.asarray(list(is_thing), dtype=bool)
        if self.is_thing.size == 0:
            raise ValueError("is_thing is empty: the vocabulary needs at least one class.")
        num_classes = self.is_thing.size
        self.is_seen = None if is_seen is None else np.asarray(list(is_seen), dtype=bool)
        if self.is_seen is not None and self.is_seen.shape != self.is_thing.shape:
            raise ValueError(f"is_seen has {self.is_seen.size} flags for {num_classes} classes; give one per class.")
        self.tp = np.zeros(num_classes, dtype=np.int64)
        self.fp = np.zeros(num_classes, dtype=np.int64)
        self.fn = np.zeros(num_classes, dtype=np.int64)
        # Python floats summed one match at a time, in panopticapi's order, keep the sums bit-identical to it.
        self.iou_sum = [0.0] * num_classes

    @property
    def num_classes(self) -> int:
        return self.is_thing.size

    def update(
        self,
        gt_segment_ids,
        gt_segments: Sequence[Mapping],
        pred_segment_ids,
        pred_segments: Sequence[Mapping],
    ) -> None:
        """Adds one image.

        Args:
            gt_segment_ids: (H, W) integer map; 0 = void, others = ids of `gt_segments`.
            gt_segments: `[{"id", "label_id", "iscrowd"}]` (label_id = contiguous class index).
            pred_segment_ids: (H, W) integer map; 0 = no prediction, others = ids of `pred_segments`.
            pred_segments: `[{"id", "label_id", ...}]`; every listed segment must cover at least one pixel.
        """
        gt_map = _to_numpy_map(gt_segment_ids, "gt_segment_ids")
        pred_map = _to_numpy_map(pred_segment_ids, "pred_segment_ids")
        if gt_map.shape != pred_map.shape:
            raise ValueError(
                f"The prediction map is {pred_map.shape[0]}x{pred_map.shape[1]} but the ground truth is "
                f"{gt_map.shape[0]}x{gt_map.shape[1]} (HxW); resize predictions to the ground-truth size."
            )
        gt_ids, gt_labels, gt_crowd, gt_order = _segment_table(gt_segments, self.num_classes, "gt_segments", True)
        pred_ids, pred_labels, _, _ = _segment_table(pred_segments, self.num_classes, "pred_segments", False)
        num_gt, num_pred = gt_ids.size, pred_ids.size

        gt_code, gt_listed = _compact(gt_map, gt_ids)
        # gt ids absent from segments_info are not void: they enlarge unions but never match (as in panopticapi).
        gt_code = np.where(gt_listed | (gt_map == 0), gt_code, num_gt + 1)
        pred_code, pred_listed = _compact(pred_map, pred_ids)
        unlisted = ~pred_listed & (pred_map != 0)
        if unlisted.any():
            raise ValueError(
                f"The prediction map contains segment ids {np.unique(pred_map[unlisted])[:10].tolist()} that are not "
                "in pred_segments."
            )
        counts = np.bincount(
            (gt_code * (num_pred + 1) + pred_code).ravel(), minlength=(num_gt + 2) * (num_pred + 1)
        ).reshape(num_gt + 2, num_pred + 1)
        pred_area = counts[:, 1:].sum(axis=0)
        if (pred_area == 0).any():
            raise ValueError(
                f"pred_segments lists segment ids {pred_ids[pred_area == 0].tolist()} that cover no pixel of the "
                "prediction map."
            )
        gt_area = counts[1 : num_gt + 1].sum(axis=1)
        pred_on_void = counts[0, 1:]
        intersection = counts[1 : num_gt + 1, 1:]

        candidate = (intersection > 0) & (gt_labels[:, None] == pred_labels[None, :]) & ~gt_crowd[:, None]
        union = pred_area[None, :] + gt_area[:, None] - intersection - pred_on_void[None, :]
        iou = np.divide(intersection, union, out=np.zeros(intersection.shape), where=candidate)
        matched = candidate & (iou > 0.5)
        for gt_index, pred_index in np.argwhere(matched):  # row-major = by gt id, then prediction id
            label = gt_labels[gt_index]
            self.tp[label] += 1
            self.iou_sum[label] += float(iou[gt_index, pred_index])

        gt_matched, pred_matched = matched.any(axis=1), matched.any(axis=0)
        np.add.at(self.fn, gt_labels[~gt_matched & ~gt_crowd], 1)

        # One crowd region per class: the last in segments_info order (panopticapi keeps a dict per class).
        sorted_position = np.empty_like(gt_order)
        sorted_position[gt_order] = np.arange(gt_order.size)
        crowd_row_of_label = {}
        for original_index in range(gt_order.size):
            row = sorted_position[original_index]
            if gt_crowd[row]:
                crowd_row_of_label[int(gt_labels[row])] = row
        for pred_index in np.flatnonzero(~pred_matched):
            label = int(pred_labels[pred_index])
            ignored = int(pred_on_void[pred_index])
            if label in crowd_row_of_label:
                ignored += int(intersection[crowd_row_of_label[label], pred_index])
            if ignored / pred_area[pred_index] > 0.5:
                continue
            self.fp[label] += 1

    def merge(self, other: "PanopticQualityAccumulator") -> None:
        """Adds another accumulator's statistics (e.g. from another process) to this one."""
        if not np.array_equal(other.is_thing, self.is_thing) or not _same_flags(other.is_seen, self.is_seen):
            raise ValueError("Cannot merge PQ accumulators built for different vocabularies or seen classes.")
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou_sum = [mine + theirs for mine, theirs in zip(self.iou_sum, other.iou_sum)]

    def compute(self) -> PanopticQualityResult:
        per_class = []
        for label in range(self.num_classes):
            tp, fp, fn, iou = int(self.tp[label]), int(self.fp[label]), int(self.fn[label]), self.iou_sum[label]
            if tp + fp + fn == 0:
                per_class.append(PanopticQualityScores(0.0, 0.0, 0.0, 0))
                continue
            denominator = tp + 0.5 * fp + 0.5 * fn
            per_class.append(PanopticQualityScores(iou / denominator, iou / tp if tp else 0.0, tp / denominator, 1))

        def average(selected: np.ndarray) -> PanopticQualityScores:
            pq = sq = rq = 0.0
            n = 0
            for label in np.flatnonzero(selected):
                scores = per_class[label]
                if scores.n:
                    pq, sq, rq, n = pq + scores.pq, sq + scores.sq, rq + scores.rq, n + 1
            if n == 0:
                return PanopticQualityScores(math.nan, math.nan, math.nan, 0)
            return PanopticQualityScores(pq / n, sq / n, rq / n, n)

        return PanopticQualityResult(
            all=average(np.ones_like(self.is_thing)),
            things=average(self.is_thing),
            stuff=average(~self.is_thing),
            per_class=per_class,
            tp=self.tp.copy(),
            fp=self.fp.copy(),
            fn=self.fn.copy(),
            iou_sum=np.asarray(self.iou_sum, dtype=np.float64),
            seen=None if self.is_seen is None else average(self.is_seen),
            unseen=None if self.is_seen is None else average(~self.is_seen),
        )


def _same_flags(first: np.ndarray | None, second: np.ndarray | None) -> bool:
    return (first is None and second is None) or (
        first is not None and second is not None and np.array_equal(first, second)
    )


def panoptic_quality(
    gt_segment_ids: Sequence,
    gt_segments: Sequence[Sequence[Mapping]],
    pred_segment_ids: Sequence,
    pred_segments: Sequence[Sequence[Mapping]],
    is_thing: Sequence[bool],
) -> PanopticQualityResult:
    """PQ of a whole dataset given as per-image lists (see `PanopticQualityAccumulator.update` for the formats)."""
    lengths = {len(gt_segment_ids), len(gt_segments), len(pred_segment_ids), len(pred_segments)}
    if len(lengths) != 1:
        raise ValueError(
            "gt_segment_ids, gt_segments, pred_segment_ids and pred_segments must have one entry per image; got "
            f"{len(gt_segment_ids)}, {len(gt_segments)}, {len(pred_segment_ids)}, {len(pred_segments)}."
        )
    accumulator = PanopticQualityAccumulator(is_thing)
    for gt_map, gt_info, pred_map, pred_info in zip(gt_segment_ids, gt_segments, pred_segment_ids, pred_segments):
        accumulator.update(gt_map, gt_info, pred_map, pred_info)
    return accumulator.compute()
