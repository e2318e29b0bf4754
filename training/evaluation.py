"""Panoptic evaluation of a PosSAM model outside the Trainer (`possam evaluate`, `possam demo`): inference,
post-processing, PQ / mask AP / mIoU.

Each process evaluates its own share of the images (every image exactly once, no padding of the last batch) and
the metric accumulators are merged on all processes, so the numbers do not depend on the number of processes.
Inside a training run, `PosSamTrainer.evaluate` computes the same metrics through transformers' evaluation loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..configuration import Vocabulary
from .panoptic_metrics import PanopticMetrics


def _to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


# Loss targets in the evaluation batches; inference does not need them.
_TARGET_KEYS = ("mask_labels", "class_labels", "ignore_mask")


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
    seen_classes: Sequence[str] | Sequence[bool] | None = None,
) -> dict[str, float]:
    """Runs `model` over a `PanopticEvaluationDataset` and returns `{prefix}_pq`, `_sq`, `_rq` (all, `_things`,
    `_stuff`, and `_seen` / `_unseen` when `seen_classes` are given), `_map`, `_ap50`, `_ap75`, `_miou`, `_pacc`, in
    percent (see `PanopticMetrics`).

    Args:
        collator: a `PosSamDataCollator` holding the evaluated vocabulary's tokens (same class order as `vocabulary`).
        vocabulary: the evaluated classes; stuff classes are merged per class and left out of mask AP.
        accelerator: when running under several processes, the `accelerate.Accelerator` that launched them.
        ensemble_mode: the class ensemble used by post-processing (default `model.config.ensemble_mode`); a list of
            modes evaluates each of them on the same forward passes and prefixes each metric with its mode
            (`{prefix}_mase_pq`, `{prefix}_clip_only_pq`, ...). `"geometric"` marks as seen the classes named in
            `model.config.training_vocabulary`.
        seen_classes: the classes seen in training (names, or one bool per label id), for seen/unseen PQ.
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    indices = list(range(rank, len(dataset), world))
    shard = Subset(dataset, indices) if world > 1 else dataset
    loader = DataLoader(shard, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)
    device = next(model.parameters()).device
    metrics = PanopticMetrics(
        image_processor, vocabulary, model.config, ensemble_mode=ensemble_mode, seen_classes=seen_classes,
        threshold=threshold, overlap_mask_area_threshold=overlap_mask_area_threshold,
    )
    was_training = model.training
    model.eval()
    try:
        position = 0
        for batch in tqdm(loader, desc="evaluating", disable=not show_progress or rank != 0):
            inputs = {key: value for key, value in batch.items() if key not in _TARGET_KEYS}
            outputs = model(**_to_device(inputs, device))
            batch_indices = indices[position : position + batch["pixel_values"].shape[0]]
            position += len(batch_indices)
            metrics.update(outputs, [dataset.ground_truth(index) for index in batch_indices])
    finally:
        model.train(was_training)

    if world > 1:
        from accelerate.utils import gather_object

        gathered = gather_object([metrics.evaluators])
        metrics.reset()
        for evaluators in gathered:
            metrics.merge(evaluators)
    return {f"{metric_key_prefix}_{name}": value for name, value in metrics.compute().items()}
