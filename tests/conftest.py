"""Shared fixtures: a tiny random PosSAM and hand-made inputs (no processor needed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# The reference implementations (segment-anything, OpenCLIP, timm, panopticapi) live in a folder of their own that
# tests/run.sh fills; first on the path, so the tests compare against exactly the pinned versions.
REFERENCE_PACKAGES = Path(__file__).resolve().parent / ".reference-packages"
sys.path.insert(0, str(REFERENCE_PACKAGES))

import possam  # noqa: E402
from possam import PosSamModel, possam_preset  # noqa: E402


IMAGE_SIZE = 128  # the tiny preset's SAM input size

# Tests count text-tower calls per process; a text-embedding disk cache shared between tests (and with the user's
# ~/.cache) would answer them. tests/test_text_cache.py turns it on explicitly, in a temporary directory.
os.environ["POSSAM_NO_TEXT_CACHE"] = "1"


def make_vocabulary(num_classes: int, synonyms_per_class: int = 2, templates: int = 2, seed: int = 0) -> dict:
    """Token ids shaped like PosSamProcessor output: `templates` prompts per synonym, synonyms grouped by class."""
    generator = torch.Generator().manual_seed(seed)
    num_synonyms = num_classes * synonyms_per_class
    num_prompts = num_synonyms * templates
    input_ids = torch.randint(400, 49000, (num_prompts, 7), generator=generator)
    input_ids[:, 0] = 49406
    input_ids[:, -1] = 49407
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "prompt_to_synonym": torch.arange(num_synonyms).repeat_interleave(templates),
        "synonym_to_class": torch.arange(num_classes).repeat_interleave(synonyms_per_class),
    }


def make_pixels(batch_size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def make_labels(batch_size: int, num_classes: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image: a top-half and a bottom-left segment, classes cycling through the vocabulary."""
    masks, classes = [], []
    for image in range(batch_size):
        segment_masks = torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE)
        segment_masks[0, : IMAGE_SIZE // 2] = 1
        segment_masks[1, IMAGE_SIZE // 2 :, : IMAGE_SIZE // 2 + 8 * image] = 1
        masks.append(segment_masks)
        classes.append(torch.tensor([image % num_classes, (image + 1) % num_classes]))
    return masks, classes


def tiny_model(**overrides) -> PosSamModel:
    torch.manual_seed(0)
    return PosSamModel(possam_preset("tiny", **overrides))


@pytest.fixture
def model() -> PosSamModel:
    return tiny_model().eval()


@pytest.fixture(scope="session")
def synthetic_splits(tmp_path_factory):
    """A small synthetic COCO-panoptic dataset written to disk: 8 training and 4 validation images of 128x128."""
    from possam.training import generate_synthetic_coco_panoptic

    root = tmp_path_factory.mktemp("synthetic")
    return {
        "train": generate_synthetic_coco_panoptic(root / "train", num_images=8, image_size=IMAGE_SIZE, seed=0),
        "val": generate_synthetic_coco_panoptic(root / "val", num_images=4, image_size=IMAGE_SIZE, seed=1000),
    }


def tiny_processor():
    from possam.processing import PosSamImageProcessor, PosSamProcessor, load_clip_tokenizer

    return PosSamProcessor(PosSamImageProcessor(size={"longest_edge": IMAGE_SIZE}), load_clip_tokenizer())
