"""Panoptic metrics of model outputs: post-processing in each ensemble mode, then PQ / mask AP / mIoU.

`PanopticMetrics` is the one place where PosSAM's outputs become metrics. It serves two loops:

- transformers' own evaluation loop, as `compute_metrics` with `batch_eval_metrics=True`: called once per batch with
  that batch's (gathered) predictions, it post-processes and accumulates them at once, so memory stays flat however
  large the evaluation set; the original-resolution ground truth comes from the evaluated dataset, in order
  (`ground_truth(index)` of `PanopticEvaluationDataset`; evaluation samplers are sequential);
- `evaluate_panoptic`'s own loop (`possam evaluate`, `possam demo`), through `update` and `compute`.

Every ensemble mode asked for is computed from the same forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..configuration import Vocabulary
from ..processing.mase import check_ensemble_mode, geometric_seen_classes
from .panoptic_evaluator import PanopticEvaluator


# The tensors of a PosSamOutput that the Trainer hands to `compute_metrics`, in output order; the config's
# `keys_to_ignore_at_inference` leaves out the rest (loss components, auxiliary predictions, features).
PREDICTION_FIELDS = ("class_queries_logits", "masks_queries_logits", "iou_scores", "clip_logits", "vocabulary_is_thing")


def _instances(result: dict) -> list[dict]:
    """Instance post-processing output (with binary maps) -> `[{"mask", "label_id", "score"}]`."""
    return [
        {"mask": mask, "label_id": segment["label_id"], "score": segment["score"]}
        for mask, segment in zip(result["segmentation"], result["segments_info"])
    ]


class PanopticMetrics:
    """Accumulates panoptic (PQ/SQ/RQ), instance (mask AP) and semantic (mIoU) metrics of PosSAM outputs.

    Args:
        image_processor: the `PosSamImageProcessor` whose post-processing turns outputs into segments.
        vocabulary: the evaluated classes (label ids, thing/stuff flags); stuff classes are merged per class and left
            out of mask AP.
        config: the model's config: ensemble constants, default `ensemble_mode`, and `training_vocabulary` for
            `"geometric"`.
        ensemble_mode: one mode (default `config.ensemble_mode`), or a list of modes, each computed from the same
            outputs; with a list, every metric is prefixed with its mode (`mase_pq`, `clip_only_pq`, ...).
        seen_classes: the classes seen in training (class names, or one bool per label id): adds `pq_seen`,
            `sq_seen`, `rq_seen`, `pq_unseen`, `sq_unseen`, `rq_unseen`.
        threshold, overlap_mask_area_threshold: panoptic post-processing settings.
        dataset: the evaluated dataset, for `__call__` (the Trainer's loop); it must have `ground_truth(index)`.
    """

    def __init__(
        self,
        image_processor,
        vocabulary: Vocabulary,
        config,
        ensemble_mode: str | Sequence[str] | None = None,
        seen_classes: Sequence[str] | Sequence[bool] | None = None,
        threshold: float = 0.0,
        overlap_mask_area_threshold: float = 0.8,
        dataset=None,
    ):
        several = ensemble_mode is not None and not isinstance(ensemble_mode, str)
        modes = list(ensemble_mode) if several else [ensemble_mode or config.ensemble_mode]
        self.modes = [check_ensemble_mode(mode) for mode in modes]
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"ensemble_mode lists a mode twice: {self.modes}.")
        self.prefix_modes = several
        self.image_processor = image_processor
        self.vocabulary = vocabulary
        self.config = config
        self.seen_classes = seen_classes
        self.threshold = threshold
        self.overlap_mask_area_threshold = overlap_mask_area_threshold
        self.geometric_seen = (
            geometric_seen_classes(vocabulary.entries, config.training_vocabulary) if "geometric" in self.modes else None
        )
        self.dataset = dataset
        self.reset()

    def reset(self) -> None:
        self.evaluators = {
            mode: PanopticEvaluator(self.vocabulary, seen_classes=self.seen_classes) for mode in self.modes
        }
        self.position = 0  # index into `dataset` of the next image the Trainer's loop hands over

    def update(self, outputs, ground_truths: Sequence[dict]) -> None:
        """Adds a batch: model outputs (a `PosSamOutput` or dict) and each image's original-resolution ground truth
        (`{"segment_ids", "segments_info"}`); predictions are resized to the ground truth's size."""
        sizes = [tuple(truth["segment_ids"].shape) for truth in ground_truths]
        stuff = self.vocabulary.stuff_label_ids
        for mode, evaluator in self.evaluators.items():
            ensemble = {"ensemble_mode": mode, "config": self.config}
            if mode == "geometric":
                ensemble["seen_classes"] = self.geometric_seen
            panoptic = self.image_processor.post_process_panoptic_segmentation(
                outputs, threshold=self.threshold, overlap_mask_area_threshold=self.overlap_mask_area_threshold,
                label_ids_to_fuse=stuff, target_sizes=sizes, **ensemble,
            )
            instances = self.image_processor.post_process_instance_segmentation(
                outputs, target_sizes=sizes, return_binary_maps=True, stuff_label_ids=stuff, **ensemble
            )
            semantic = self.image_processor.post_process_semantic_segmentation(outputs, target_sizes=sizes, **ensemble)
            for truth, panoptic_result, instance_result, semantic_map in zip(ground_truths, panoptic, instances, semantic):
                evaluator.update(truth, panoptic=panoptic_result, instances=_instances(instance_result), semantic=semantic_map)

    def merge(self, evaluators: dict[str, PanopticEvaluator]) -> None:
        """Adds the images another process saw: its `evaluators` (one `PanopticEvaluator` per ensemble mode)."""
        for mode, evaluator in self.evaluators.items():
            evaluator.merge(evaluators[mode])

    def compute(self) -> dict[str, float]:
        """The metrics in percent, lowercase snake case (`pq`, `pq_things`, `map`, `miou`, ...)."""
        metrics = {}
        for mode, evaluator in self.evaluators.items():
            prefix = f"{mode}_" if self.prefix_modes else ""
            metrics.update({f"{prefix}{name}": value for name, value in evaluator.compute().items()})
        return metrics

    def __call__(self, eval_pred, compute_result: bool = False) -> dict[str, float] | None:
        """`compute_metrics` for transformers' Trainer with `batch_eval_metrics=True` (and `eval_do_concat_batches=
        False`): accumulates one batch of predictions; on the last batch returns the metrics and starts over."""
        if self.dataset is None or not hasattr(self.dataset, "ground_truth"):
            raise ValueError(
                "PanopticMetrics needs the evaluated dataset (a PanopticEvaluationDataset, which has ground_truth(index)) "
                "to compare the Trainer's predictions with: PanopticMetrics(..., dataset=eval_dataset)."
            )
        predictions = eval_pred.predictions
        if isinstance(predictions, torch.Tensor) or len(predictions) < 4:
            raise ValueError(
                f"Expected the model's {PREDICTION_FIELDS[:4]} as predictions; set the Trainer's "
                "TrainingArguments(batch_eval_metrics=True, eval_do_concat_batches=False) and keep the config's "
                "keys_to_ignore_at_inference."
            )
        outputs = dict(zip(PREDICTION_FIELDS, predictions))
        batch_size = outputs["class_queries_logits"].shape[0]
        end = self.position + batch_size
        if end > len(self.dataset):
            raise ValueError(
                f"The Trainer handed over {end} predictions but the dataset bound to PanopticMetrics has "
                f"{len(self.dataset)} images: bind the dataset being evaluated."
            )
        self.update(outputs, [self.dataset.ground_truth(index) for index in range(self.position, end)])
        self.position = end
        if not compute_result:
            return None
        metrics = self.compute()
        self.reset()
        return metrics
