"""One evaluator for PosSAM's three outputs: panoptic (PQ/SQ/RQ), instance (mask AP on things), semantic (mIoU).

It consumes post-processing outputs image by image together with the decoded ground truth and returns one flat dict
of percentages (the scale of the paper's tables and of detectron2's evaluators), named in lowercase snake case:

    pq, sq, rq, pq_things, sq_things, rq_things, pq_stuff, sq_stuff, rq_stuff   from panoptic predictions
    pq_seen, sq_seen, rq_seen, pq_unseen, sq_unseen, rq_unseen                   the same, when seen classes are given
    map, ap50, ap75                                                             from instance predictions (things)
    miou, pacc                                                                  from semantic predictions

Only the metrics of the outputs that were given are reported; every image must give the same outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..configuration import Vocabulary
from ..processing.mase import seen_class_mask
from .metric_mask_ap import MaskAPAccumulator
from .metric_panoptic_quality import PanopticQualityAccumulator
from .metric_semantic_iou import SemanticIoUAccumulator


def _segment_map(value, name: str) -> np.ndarray:
    array = np.asarray(value.cpu() if hasattr(value, "cpu") else value)
    if array.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) map, got shape {array.shape}.")
    return array.astype(np.int64, copy=False)


def _get_segment_map(entry: Mapping, name: str) -> np.ndarray:
    for key in ("segmentation", "segment_ids"):
        if key in entry:
            return _segment_map(entry[key], f"{name}[{key!r}]")
    raise ValueError(f"{name} needs a 'segmentation' (or 'segment_ids') map and 'segments_info'; got {sorted(entry)}.")


def semantic_map_from_panoptic(segment_ids, segments_info: Sequence[Mapping], ignore_index: int = 255) -> np.ndarray:
    """The semantic label map of a panoptic ground truth: each pixel gets its segment's label_id, void `ignore_index`.

    Crowd regions keep their class (they are labelled pixels of that class).
    """
    segment_ids = _segment_map(segment_ids, "segment_ids")
    semantic = np.full(segment_ids.shape, ignore_index, dtype=np.int64)
    for segment in segments_info:
        semantic[segment_ids == int(segment["id"])] = int(segment["label_id"])
    return semantic


class PanopticEvaluator:
    """Accumulates PQ, mask AP and mIoU over a dataset.

    Args:
        vocabulary: the evaluated vocabulary (label ids and thing/stuff flags); or give `is_thing` directly.
        is_thing: per label id, whether the class is a thing.
        ignore_index: value used for void in semantic ground-truth maps.
        seen_classes: the classes seen in training, for PQ/SQ/RQ over seen and unseen classes separately: one bool
            per label id, or class names (a class is seen when one of its names is among them, case-insensitive;
            needs `vocabulary`), e.g. the training vocabulary's entries.
    """

    def __init__(
        self,
        vocabulary: Vocabulary | None = None,
        is_thing: Sequence[bool] | None = None,
        ignore_index: int = 255,
        seen_classes: Sequence[bool] | Sequence[str] | None = None,
    ):
        if (vocabulary is None) == (is_thing is None):
            raise ValueError("Give exactly one of vocabulary or is_thing.")
        self.is_thing = list(vocabulary.is_thing if vocabulary is not None else is_thing)
        self.is_seen = None if seen_classes is None else _seen_flags(seen_classes, vocabulary, len(self.is_thing))
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self._panoptic = PanopticQualityAccumulator(self.is_thing, self.is_seen)
        self._instance = MaskAPAccumulator(self.is_thing)
        self._semantic = SemanticIoUAccumulator(len(self.is_thing), self.ignore_index)
        self._tasks: tuple[bool, bool, bool] | None = None
        self.num_images = 0

    def update(
        self,
        ground_truth: Mapping,
        panoptic: Mapping | None = None,
        instances: Sequence[Mapping] | None = None,
        semantic=None,
    ) -> None:
        """Adds one image.

        Args:
            ground_truth: `{"segmentation" (or "segment_ids"): (H, W) ids, 0 = void, "segments_info":
                [{"id", "label_id", "iscrowd"}]}`, e.g. from `decode_panoptic_example`.
            panoptic: `{"segmentation": (H, W) ids (0 or negative = no segment), "segments_info":
                [{"id", "label_id", "score", ...}]}` from panoptic post-processing.
            instances: `[{"mask": (H, W) bool, "label_id", "score"}]` from instance post-processing.
            semantic: (H, W) label map from semantic post-processing.

        Inputs are checked before they are counted; if this raises part-way, call `reset()` before reusing the
        evaluator.
        """
        tasks = (panoptic is not None, instances is not None, semantic is not None)
        if not any(tasks):
            raise ValueError("Give at least one of panoptic, instances or semantic predictions.")
        if self._tasks is not None and tasks != self._tasks:
            raise ValueError(
                "Every image must give the same kinds of predictions: the first image gave (panoptic, instances, "
                f"semantic) = {self._tasks}, this one {tasks}."
            )
        if "segments_info" not in ground_truth:
            raise ValueError("ground_truth needs 'segments_info'.")
        gt_ids = _get_segment_map(ground_truth, "ground_truth")
        gt_segments = ground_truth["segments_info"]
        if panoptic is not None:
            if "segments_info" not in panoptic:
                raise ValueError("panoptic needs 'segments_info'.")
            pred_ids = _get_segment_map(panoptic, "panoptic")
            # transformers' post-processing marks "no segment" with -1; panopticapi's void is 0.
            pred_ids = np.where(pred_ids < 0, 0, pred_ids)
            self._panoptic.update(gt_ids, gt_segments, pred_ids, panoptic["segments_info"])
        if instances is not None:
            self._instance.update(gt_ids, gt_segments, instances)
        if semantic is not None:
            gt_semantic = semantic_map_from_panoptic(gt_ids, gt_segments, self.ignore_index)
            self._semantic.update(_segment_map(semantic, "semantic"), gt_semantic)
        self._tasks = tasks
        self.num_images += 1

    def merge(self, other: "PanopticEvaluator") -> None:
        """Adds the images another evaluator saw (e.g. another process's share of the dataset)."""
        if other.is_thing != self.is_thing:
            raise ValueError("Cannot merge evaluators of different vocabularies.")
        if other._tasks is None:
            return
        if self._tasks is not None and other._tasks != self._tasks:
            raise ValueError(f"Cannot merge evaluators of different outputs: {self._tasks} vs {other._tasks}.")
        self._panoptic.merge(other._panoptic)
        self._instance.merge(other._instance)
        self._semantic.merge(other._semantic)
        self._tasks = other._tasks
        self.num_images += other.num_images

    def compute(self) -> dict[str, float]:
        """The metrics, in percent, for the outputs given to `update`."""
        if self._tasks is None:
            raise ValueError("No image was added: call update() before compute().")
        metrics: dict[str, float] = {}
        with_panoptic, with_instances, with_semantic = self._tasks
        if with_panoptic:
            result = self._panoptic.compute()
            for suffix, scores in result.groups():
                metrics[f"pq{suffix}"] = 100.0 * scores.pq
                metrics[f"sq{suffix}"] = 100.0 * scores.sq
                metrics[f"rq{suffix}"] = 100.0 * scores.rq
        if with_instances:
            ap = self._instance.compute()
            metrics.update({"map": 100.0 * ap.ap, "ap50": 100.0 * ap.ap50, "ap75": 100.0 * ap.ap75})
        if with_semantic:
            iou = self._semantic.compute()
            metrics.update({"miou": 100.0 * iou.miou, "pacc": 100.0 * iou.pixel_accuracy})
        return metrics


def _seen_flags(seen_classes, vocabulary: Vocabulary | None, num_classes: int) -> list[bool]:
    """One seen flag per label id from flags or from class names (see `PanopticEvaluator`)."""
    seen_classes = list(seen_classes)
    if all(isinstance(value, str) for value in seen_classes):
        if vocabulary is None:
            raise ValueError("seen_classes given as class names need the evaluated vocabulary (vocabulary=...).")
        return seen_class_mask(vocabulary.entries, seen_classes).tolist()
    if len(seen_classes) != num_classes or not all(isinstance(value, (bool, np.bool_)) for value in seen_classes):
        raise ValueError(
            f"seen_classes must be {num_classes} bools (one per label id) or class names, got {seen_classes[:5]}..."
        )
    return [bool(value) for value in seen_classes]
