"""Tiny PosSAM checkpoints on disk for the pipeline and `possam predict` tests."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from possam import PosSamImageProcessor, PosSamModel, PosSamProcessor, Vocabulary, possam_preset
from possam.processing import load_clip_tokenizer

# The tiny preset's default vocabulary would be COCO's 133 classes; three keep the tests fast.
VOCABULARY = ["cat", "dog,puppy", "grass,lawn"]
IS_THING = [True, True, False]
TRAINING_VOCABULARY = ["cat", "grass"]


def tiny_processor() -> PosSamProcessor:
    return PosSamProcessor(PosSamImageProcessor(size={"longest_edge": 128}), load_clip_tokenizer())


def tiny_model(**overrides) -> PosSamModel:
    torch.manual_seed(0)
    config = possam_preset(
        "tiny",
        vocabulary=VOCABULARY,
        vocabulary_is_thing=IS_THING,
        training_vocabulary=TRAINING_VOCABULARY,
        **overrides,
    )
    return PosSamModel(config).eval()


def save_checkpoint(folder, store_default_vocabulary: bool) -> str:
    """Saves the tiny model (same weights every time) and its processor; optionally with the default vocabulary's
    text embeddings stored in the weights (`set_default_vocabulary`)."""
    model, processor = tiny_model(), tiny_processor()
    if store_default_vocabulary:
        vocabulary = Vocabulary.from_entries(VOCABULARY, IS_THING)
        model.set_default_vocabulary(
            vocabulary.entries, vocabulary.is_thing, **processor.encode_vocabulary(vocabulary)
        )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def random_image(height: int, width: int, seed: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    # Smooth colour blobs rather than noise, so the random model sees some structure.
    base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
    return PIL.Image.fromarray(base).resize((width, height), PIL.Image.BILINEAR)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run faster on one thread, and far faster when other processes keep the cores busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
