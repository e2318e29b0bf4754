"""Batching PosSAM examples, with the tokenized vocabulary of the run attached to every batch."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..outputs import PosSamImageFeatures


# Per-image tensors of the same shape in every example, stacked into one batch tensor.
STACKED_KEYS = ("pixel_values", "pixel_mask", "ignore_mask")
# Per-image tensors of varying length (one row per segment), kept as lists.
LISTED_KEYS = ("mask_labels", "class_labels")


class PosSamDataCollator:
    """Collates examples of `PanopticTrainingDataset`, `PanopticEvaluationDataset` or `CachedFeaturesDataset`.

    Every key of a batch is a `PosSamModel.forward` argument, so transformers' `Trainer` can train, evaluate and
    predict with it (`remove_unused_columns=False`, `label_names=["mask_labels", "class_labels"]`).

    Args:
        text_inputs: the run's vocabulary tokenized by `PosSamProcessor` (`input_ids`, `attention_mask`,
            `prompt_to_synonym`, `synonym_to_class`). It is the same in every batch; the model embeds it once and
            serves later batches from its text-embedding cache, so the text tower runs once per run.
    """

    def __init__(self, text_inputs: Mapping[str, torch.Tensor]):
        self.text_inputs = dict(text_inputs)

    def __call__(self, examples: list[dict]) -> dict:
        first = examples[0]
        batch: dict = {}
        for key in STACKED_KEYS:
            if key in first:
                batch[key] = torch.stack([example[key] for example in examples])
        for key in LISTED_KEYS:
            if key in first:
                batch[key] = [example[key] for example in examples]
        if "sam_image_embeddings" in first:
            batch["image_features"] = PosSamImageFeatures(
                sam_image_embeddings=torch.stack([example["sam_image_embeddings"] for example in examples]),
                clip_image_features=torch.stack([example["clip_image_features"] for example in examples]),
            )
        batch.update(self.text_inputs)
        return batch
