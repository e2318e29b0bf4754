"""Mean IoU of semantic segmentation from a confusion matrix accumulated over the dataset.

IoU_c = TP_c / (TP_c + FP_c + FN_c) with the counts summed over all images; ground-truth pixels equal to
`ignore_index` (void) are left out entirely, predictions on them included. mIoU is the mean over the classes that
occur in the ground truth (as in detectron2's semantic-segmentation evaluator used by FC-CLIP); a class that is
only predicted still lowers the IoU of the classes it was confused with through their FN counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SemanticIoUResult:
    """mIoU and pixel accuracy (fractions), per-class IoU (NaN for classes absent from the ground truth)."""

    miou: float
    pixel_accuracy: float
    per_class_iou: np.ndarray
    confusion: np.ndarray


def _label_map(labels, name: str) -> np.ndarray:
    array = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
    if array.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) label map, got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer label ids, got dtype {array.dtype}.")
    return array.astype(np.int64, copy=False)


class SemanticIoUAccumulator:
    """Accumulates a (C x C) confusion matrix, rows = ground truth, columns = prediction.

    Args:
        num_classes: C, the number of classes (label ids 0..C-1).
        ignore_index: ground-truth value marking void pixels.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class id (0..{num_classes - 1}).")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction, ground_truth) -> None:
        """Adds one image: `prediction` and `ground_truth` are (H, W) label maps of the same size."""
        prediction = _label_map(prediction, "prediction")
        ground_truth = _label_map(ground_truth, "ground_truth")
        if prediction.shape != ground_truth.shape:
            raise ValueError(
                f"The semantic prediction is {prediction.shape[0]}x{prediction.shape[1]} but the ground truth is "
                f"{ground_truth.shape[0]}x{ground_truth.shape[1]} (HxW)."
            )
        valid = ground_truth != self.ignore_index
        gt, pred = ground_truth[valid], prediction[valid]
        for name, values in (("ground_truth", gt), ("prediction", pred)):
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(
                    f"{name} has label ids in [{values.min()}, {values.max()}]; expected 0..{self.num_classes - 1}"
                    f" (or {self.ignore_index} for void in the ground truth)."
                )
        self.confusion += np.bincount(gt * self.num_classes + pred, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def merge(self, other: "SemanticIoUAccumulator") -> None:
        """Adds another accumulator's confusion matrix (e.g. from another process)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"Cannot merge accumulators with {other.num_classes} and {self.num_classes} classes.")
        self.confusion += other.confusion

    def compute(self) -> SemanticIoUResult:
        true_positive = np.diag(self.confusion).astype(np.float64)
        gt_pixels = self.confusion.sum(axis=1)
        pred_pixels = self.confusion.sum(axis=0)
        present = gt_pixels > 0
        per_class = np.full(self.num_classes, math.nan)
        union = gt_pixels + pred_pixels - true_positive
        per_class[present] = true_positive[present] / union[present]
        total = self.confusion.sum()
        return SemanticIoUResult(
            miou=float(per_class[present].mean()) if present.any() else math.nan,
            pixel_accuracy=float(true_positive.sum() / total) if total else math.nan,
            per_class_iou=per_class,
            confusion=self.confusion.copy(),
        )
