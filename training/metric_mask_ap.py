"""Instance-segmentation mask AP on thing classes, computed by pycocotools' `COCOeval` (iouType="segm").

The ground truth comes from panoptic annotations: every thing segment is one instance; crowd segments are kept
with `iscrowd=1`, so COCOeval treats them as its "ignore" regions (detections matching them are neither TP nor FP).
Stuff segments and predictions of stuff classes are not part of instance AP. Masks are RLE-encoded per image as they
arrive, so memory stays small. AP is COCO's AP@[0.50:0.95] (fractions), averaged over thing classes with ground
truth; `maxDets` = 100 per image.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass(frozen=True)
class MaskAPResult:
    """COCO mask AP (fractions): AP@[.5:.95], AP50, AP75, and AP for small / medium / large objects.

    All are NaN when the ground truth has no thing instance (COCOeval reports -1 then).
    """

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float


def _annotation(mask: np.ndarray, image_id: int, label: int, iscrowd: int, score: float | None = None) -> dict:
    """A COCO annotation of one binary mask (RLE); category ids are label ids + 1."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    annotation = {
        "image_id": image_id,
        "category_id": label + 1,
        "segmentation": rle,
        "area": float(mask_utils.area(rle)),
        "bbox": mask_utils.toBbox(rle).tolist(),
        "iscrowd": iscrowd,
    }
    if score is not None:
        annotation["score"] = score
    return annotation


def _as_numpy(array) -> np.ndarray:
    return np.asarray(array.cpu() if hasattr(array, "cpu") else array)


class MaskAPAccumulator:
    """Collects RLE-encoded ground truth and predictions image by image; `compute()` runs COCOeval.

    Args:
        is_thing: per contiguous label id, whether the class is a thing (only things are evaluated).
    """

    def __init__(self, is_thing: Sequence[bool]):
        self.is_thing = [bool(flag) for flag in is_thing]
        if not self.is_thing:
            raise ValueError("is_thing is empty: the vocabulary needs at least one class.")
        self._images: list[dict] = []
        self._gt: list[dict] = []
        self._dt: list[dict] = []

    def update(self, gt_segment_ids, gt_segments: Sequence[Mapping], instances: Sequence[Mapping]) -> None:
        """Adds one image.

        Args:
            gt_segment_ids: (H, W) integer panoptic map (0 = void).
            gt_segments: `[{"id", "label_id", "iscrowd"}]`; thing segments become instances.
            instances: predictions `[{"mask": (H, W) bool, "label_id": int, "score": float}]`.
        """
        gt_map = _as_numpy(gt_segment_ids)
        if gt_map.ndim != 2:
            raise ValueError(f"gt_segment_ids must be an (H, W) map, got shape {gt_map.shape}.")
        height, width = gt_map.shape
        # Validate and encode everything first, so that a bad input leaves the accumulator unchanged.
        image_id = len(self._images) + 1
        num_classes = len(self.is_thing)
        gt, dt = [], []
        for segment in gt_segments:
            label = int(segment["label_id"])
            if not 0 <= label < num_classes:
                raise ValueError(f"gt segment {segment['id']}: label_id {label} is outside 0..{num_classes - 1}.")
            if not self.is_thing[label]:
                continue
            mask = gt_map == int(segment["id"])
            if not mask.any():
                raise ValueError(f"gt segment {segment['id']} does not occur in gt_segment_ids.")
            gt.append(_annotation(mask, image_id, label, iscrowd=int(segment.get("iscrowd", 0))))
        for index, instance in enumerate(instances):
            label = int(instance["label_id"])
            if not 0 <= label < num_classes:
                raise ValueError(f"instances[{index}]: label_id {label} is outside 0..{num_classes - 1}.")
            if not self.is_thing[label]:
                continue
            mask = _as_numpy(instance["mask"]).astype(bool)
            if mask.shape != (height, width):
                raise ValueError(
                    f"instances[{index}]: mask is {mask.shape[0]}x{mask.shape[1]} but the ground truth is "
                    f"{height}x{width} (HxW)."
                )
            dt.append(_annotation(mask, image_id, label, iscrowd=0, score=float(instance["score"])))
        # Annotation ids must start at 1: COCOeval stores matched ids with 0 meaning "unmatched".
        for offset, annotation in enumerate(gt, start=len(self._gt) + 1):
            annotation["id"] = offset
        for offset, annotation in enumerate(dt, start=len(self._dt) + 1):
            annotation["id"] = offset
        self._images.append({"id": image_id, "height": height, "width": width})
        self._gt.extend(gt)
        self._dt.extend(dt)

    def merge(self, other: "MaskAPAccumulator") -> None:
        """Appends another accumulator's images (e.g. from another process), renumbering their ids."""
        if other.is_thing != self.is_thing:
            raise ValueError("Cannot merge mask-AP accumulators built for different vocabularies.")
        image_offset, gt_offset, dt_offset = len(self._images), len(self._gt), len(self._dt)
        self._images.extend({**image, "id": image["id"] + image_offset} for image in other._images)
        self._gt.extend(
            {**annotation, "id": annotation["id"] + gt_offset, "image_id": annotation["image_id"] + image_offset}
            for annotation in other._gt
        )
        self._dt.extend(
            {**annotation, "id": annotation["id"] + dt_offset, "image_id": annotation["image_id"] + image_offset}
            for annotation in other._dt
        )

    def compute(self) -> MaskAPResult:
        if not any(segment["iscrowd"] == 0 for segment in self._gt):
            return MaskAPResult(*(math.nan,) * 6)
        categories = [{"id": label + 1} for label, thing in enumerate(self.is_thing) if thing]
        # COCOeval and COCO print progress; keep the caller's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth = COCO()
            ground_truth.dataset = {"images": self._images, "annotations": self._gt, "categories": categories}
            ground_truth.createIndex()
            # Built directly (not with loadRes, which fails on an empty list): no detections is a valid result.
            detections = COCO()
            detections.dataset = {"images": self._images, "annotations": self._dt, "categories": categories}
            detections.createIndex()
            evaluator = COCOeval(ground_truth, detections, iouType="segm")
            evaluator.params.catIds = [category["id"] for category in categories]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = [math.nan if value < 0 else float(value) for value in evaluator.stats[:6]]
        return MaskAPResult(*stats)
