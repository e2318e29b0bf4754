"""Panoptic evaluation of a PosSAM model: inference, post-processing, PQ / mask AP / mIoU.

Each process evaluates its own share of the images (every image exactly once, no padding of the last batch) and
the metric accumulators are merged on all processes, so the numbers do not depend on the number of processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..configuration import Vocabulary
from ..processing.mase import check_ensemble_mode, geometric_seen_classes
from .panoptic_evaluator import PanopticEvaluator


def _to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def _instances(result: dict) -> list[dict]:
    """Instance post-processing output (with binary maps) -> `[{"mask", "label_id", "score"}]`."""
    return [
        {"mask": mask, "label_id": segment["label_id"], "score": segment["score"]}
        for mask, segment in zip(result["segmentation"], result["segments_info"])
    ]


@torch.no_grad()
def evaluate_panoptic(
    model,
    dataset,
    collator,
    image_processor,
    vocabulary: Vocabulary,
    batch_size: int = 1,
    num_workers: int = 0,
    accelerator=None,
    metric_key_prefix: str = "eval",
    threshold: float = 0.0,
    overlap_mask_area_threshold: float = 0.8,
    show_progress: bool = True,
    ensemble_mode: str | Sequence[str] | None = None,
) -> dict[str, float]:
    """Runs `model` over a `PanopticEvaluationDataset` and returns `{prefix}_PQ`, `_SQ`, `_RQ` (all, `_th`, `_st`),
    `_mAP`, `_AP50`, `_AP75`, `_mIoU`, `_pACC`, in percent.

    Args:
        collator: a `PosSamDataCollator` holding the evaluated vocabulary's tokens (same class order as `vocabulary`).
        vocabulary: the evaluated classes; stuff classes are merged per class and left out of mask AP.
        accelerator: when running under several processes, the `accelerate.Accelerator` that launched them.
        ensemble_mode: the class ensemble used by post-processing (default `model.config.ensemble_mode`); a list of
            modes evaluates each of them on the same forward passes and prefixes each metric with its mode
            (`{prefix}_mase_PQ`, `{prefix}_clip_only_PQ`, ...). `"geometric"` marks as seen the classes named in
            `model.config.training_vocabulary`.
    """
    config = model.config
    several = ensemble_mode is not None and not isinstance(ensemble_mode, str)
    modes = [check_ensemble_mode(mode) for mode in (ensemble_mode if several else [ensemble_mode or config.ensemble_mode])]
    if several and len(set(modes)) != len(modes):
        raise ValueError(f"ensemble_mode lists a mode twice: {modes}.")
    seen = geometric_seen_classes(vocabulary.entries, config.training_vocabulary) if "geometric" in modes else None
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    shard = Subset(dataset, range(rank, len(dataset), world)) if world > 1 else dataset
    loader = DataLoader(shard, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)
    device = next(model.parameters()).device
    evaluators = {mode: PanopticEvaluator(vocabulary) for mode in modes}
    stuff = vocabulary.stuff_label_ids
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc="evaluating", disable=not show_progress or rank != 0):
            ground_truth, sizes = batch.pop("ground_truth"), batch.pop("original_sizes")
            outputs = model(**_to_device(batch, device))
            for mode, evaluator in evaluators.items():
                ensemble = {"ensemble_mode": mode, "config": config, "seen_classes": seen if mode == "geometric" else None}
                panoptic = image_processor.post_process_panoptic_segmentation(
                    outputs, threshold=threshold, overlap_mask_area_threshold=overlap_mask_area_threshold,
                    label_ids_to_fuse=stuff, target_sizes=sizes, **ensemble,
                )
                instances = image_processor.post_process_instance_segmentation(
                    outputs, target_sizes=sizes, return_binary_maps=True, stuff_label_ids=stuff, **ensemble
                )
                semantic = image_processor.post_process_semantic_segmentation(outputs, target_sizes=sizes, **ensemble)
                for truth, panoptic_result, instance_result, semantic_map in zip(ground_truth, panoptic, instances, semantic):
                    evaluator.update(truth, panoptic=panoptic_result, instances=_instances(instance_result), semantic=semantic_map)
    finally:
        model.train(was_training)

    metrics = {}
    for mode, evaluator in evaluators.items():
        if world > 1:
            from accelerate.utils import gather_object

            gathered = gather_object([evaluator])
            evaluator = gathered[0]
            for other in gathered[1:]:
                evaluator.merge(other)
        prefix = f"{metric_key_prefix}_{mode}" if several else metric_key_prefix
        metrics.update({f"{prefix}_{name}": value for name, value in evaluator.compute().items()})
    return metrics
