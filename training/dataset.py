"""Model-ready examples from a COCO-panoptic-format dataset: decode, augment, tensorize.

Training examples go through large-scale jitter and become `pixel_values`, `pixel_mask`, `mask_labels`,
`class_labels` and `ignore_mask` (crowd, void and padding pixels, which the loss skips). Evaluation examples are
resized like inference inputs and carry their original-resolution ground truth for the metrics.

Augmentation randomness is a pure function of `(seed, epoch, index)`, never of a running random state, so a run
resumed from a checkpoint sees exactly the augmentations the uninterrupted run would have, whatever the number of
data-loader workers or processes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .augmentation import LargeScaleJitter
from .coco_panoptic import PanopticExample, decode_panoptic_example


def _segments_with_labels(example: PanopticExample) -> list[dict]:
    return [
        {"id": segment["id"], "label_id": segment["label_id"], "iscrowd": segment.get("iscrowd", 0)}
        for segment in example.segments_info
    ]


class PanopticTrainingDataset(Dataset):
    """Augmented training examples for PosSAM.

    Args:
        dataset: a `datasets.Dataset` from `load_coco_panoptic`.
        image_processor: a `PosSamImageProcessor`; its `size` is the crop size (the model's input size).
        seed: base seed of the augmentation.
        min_scale, max_scale: large-scale-jitter range (0.1-2.0 in the recipe).
        augment: `False` replaces the jitter by the inference resize (for `--cache_features`-like fixed inputs).
    """

    def __init__(self, dataset, image_processor, seed: int = 0, min_scale: float = 0.1, max_scale: float = 2.0, augment: bool = True):
        self.dataset = dataset
        self.image_processor = image_processor
        self.seed = seed
        self.augment = augment
        self.jitter = LargeScaleJitter(image_processor.padded_size, min_scale=min_scale, max_scale=max_scale)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer's data loader at every epoch: new augmentations, still reproducible."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        example = decode_panoptic_example(self.dataset[index])
        annotation = {"segments_info": _segments_with_labels(example)}
        if not self.augment:
            annotation["panoptic_map"] = example.segment_ids
            batch = self.image_processor.preprocess([example.image], [annotation])
            return {key: batch[key][0] for key in ("pixel_values", "pixel_mask", "mask_labels", "class_labels", "ignore_mask")}
        rng = np.random.default_rng([self.seed, self.epoch, index])
        augmented = self.jitter(example.image, example.segment_ids, rng)
        # The jitter pads to the crop size itself; hand the processor only the image part so that it marks the
        # padding in `pixel_mask` and pads with its own (normalized) value.
        rows, columns = augmented.valid_mask.any(1).sum(), augmented.valid_mask.any(0).sum()
        annotation["panoptic_map"] = augmented.segment_ids[:rows, :columns]
        return self.image_processor.prepare_training_example(augmented.image[:rows, :columns], annotation)


class PanopticEvaluationDataset(Dataset):
    """Evaluation examples: the inference input, its loss targets, and (by index) the original-resolution ground truth.

    Each item holds only what the model accepts, so that transformers' `Trainer` can evaluate and predict with it:
    `pixel_values`, `pixel_mask`, and the un-augmented loss targets `mask_labels`, `class_labels`, `ignore_mask` (the
    Trainer's `label_names`: they give `eval_loss`). The metrics compare predictions at the original resolution with
    `ground_truth(index)` (`{"segment_ids", "segments_info"}` with contiguous `label_id`s, crowd flags kept), the form
    `PanopticEvaluator.update` reads.
    """

    def __init__(self, dataset, image_processor):
        self.dataset = dataset
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        example = decode_panoptic_example(self.dataset[index])
        annotation = {"panoptic_map": example.segment_ids, "segments_info": _segments_with_labels(example)}
        inputs = self.image_processor.preprocess([example.image], [annotation])
        return {key: inputs[key][0] for key in ("pixel_values", "pixel_mask", "mask_labels", "class_labels", "ignore_mask")}

    def ground_truth(self, index: int) -> dict:
        """The original-resolution panoptic ground truth of example `index`."""
        example = decode_panoptic_example(self.dataset[index])
        return {"segment_ids": example.segment_ids, "segments_info": list(example.segments_info)}
