"""PosSAM inside transformers: task registration, no default model, Auto classes, the `image-segmentation` pipeline,
and saving a pipeline."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from pipeline_testing import random_image, save_checkpoint, single_thread  # noqa: F401  (autouse fixture)
from possam import OpenVocabPanopticPipeline, PosSamModel
from transformers import AutoModelForImageSegmentation, AutoModelForUniversalSegmentation, pipeline
from transformers.pipelines import PIPELINE_REGISTRY


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("stored"), store_default_vocabulary=True)


def test_task_is_registered_on_import():
    assert "open-vocab-panoptic" in PIPELINE_REGISTRY.get_supported_tasks()
    task, impl, _ = PIPELINE_REGISTRY.check_task("open-vocab-panoptic")
    assert impl["impl"] is OpenVocabPanopticPipeline
    assert OpenVocabPanopticPipeline._load_processor is True
    assert (
        OpenVocabPanopticPipeline._load_tokenizer is False and OpenVocabPanopticPipeline._load_image_processor is False
    )


def test_no_default_model_explains_itself():
    with pytest.raises(ValueError, match="no default model: no public PosSAM weights exist"):
        pipeline("open-vocab-panoptic")


def test_auto_classes_load_posam(checkpoint):
    assert isinstance(AutoModelForImageSegmentation.from_pretrained(checkpoint), PosSamModel)
    assert isinstance(AutoModelForUniversalSegmentation.from_pretrained(checkpoint), PosSamModel)


@pytest.mark.parametrize("subtask", ["panoptic", "semantic"])
def test_image_segmentation_pipeline_uses_the_default_vocabulary(checkpoint, subtask):
    image = random_image(60, 90, seed=3)
    # transformers' default threshold (0.9) suits Mask2Former's class probabilities; PosSAM scores are class
    # probability x predicted IoU, so 0.0 keeps every non-void segment, as the open-vocab-panoptic pipeline does.
    segmenter = pipeline("image-segmentation", model=checkpoint, device="cpu")
    options = {"threshold": 0.0, "overlap_mask_area_threshold": 0.8} if subtask == "panoptic" else {}
    result = segmenter(image, subtask=subtask, **options)
    reference = pipeline("open-vocab-panoptic", model=checkpoint, device="cpu")(image, subtask=subtask)

    assert len(result) == len(reference) > 0
    for segment, expected in zip(result, reference):
        assert segment["label"] == expected["label"] and segment["label"] in {"cat", "dog", "grass"}
        if subtask == "semantic":
            assert segment["score"] is None and expected["score"] is None
        else:
            assert segment["score"] == pytest.approx(expected["score"])
        assert segment["mask"].size == (90, 60)
        np.testing.assert_array_equal(np.asarray(segment["mask"]), np.asarray(expected["mask"]))


def test_saved_pipeline_loads_without_remote_code(checkpoint, tmp_path):
    image = random_image(40, 40, seed=4)
    segmenter = pipeline("open-vocab-panoptic", model=checkpoint, device="cpu")
    segmenter.save_pretrained(tmp_path)
    # config.json names the thin remote code for processes without `import possam` (tests/test_hub.py); with it, the
    # registered task loads the folder without `trust_remote_code`.
    with open(os.path.join(tmp_path, "config.json"), encoding="utf-8") as handle:
        task = json.load(handle)["custom_pipelines"]["open-vocab-panoptic"]
    assert task["impl"] == "pipeline_possam.OpenVocabPanopticPipeline"
    assert os.path.isfile(os.path.join(tmp_path, "pipeline_possam.py"))
    reloaded = pipeline("open-vocab-panoptic", model=str(tmp_path), device="cpu")
    before = segmenter(image, candidate_labels=["cat", "sky"], return_panoptic_map=True)
    after = reloaded(image, candidate_labels=["cat", "sky"], return_panoptic_map=True)
    assert before["segments_info"] == after["segments_info"]
    np.testing.assert_array_equal(before["segmentation"], after["segmentation"])


def test_image_segmentation_pipeline_batches(checkpoint):
    """transformers' batch splitter cuts every output along dim 0: the default vocabulary's thing flags come one
    row per image, so batched calls work and equal single calls."""
    images = [random_image(60, 90, seed=seed) for seed in (3, 4, 5)]
    segmenter = pipeline("image-segmentation", model=checkpoint, device="cpu")
    batched = segmenter(images, threshold=0.0, batch_size=2)
    singles = [segmenter(image, threshold=0.0) for image in images]
    assert [[s["label"] for s in result] for result in batched] == [[s["label"] for s in result] for result in singles]
    for result, single in zip(batched, singles):
        for segment, expected in zip(result, single):
            np.testing.assert_array_equal(np.asarray(segment["mask"]), np.asarray(expected["mask"]))
