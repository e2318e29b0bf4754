"""The open-vocab-panoptic pipeline: output format, subtasks, batching, vocabularies, caching, MASE modes, errors."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from pipeline_testing import (
    IS_THING,
    VOCABULARY,
    random_image,
    save_checkpoint,
    single_thread,  # noqa: F401  (autouse fixture)
    tiny_model,
    tiny_processor,
)
from possam import OpenVocabPanopticPipeline, PosSamOutput, Vocabulary, VocabularyError
from transformers import pipeline

LABELS = ["cat", "person,child", "grass,lawn"]
STUFF = ["grass"]
HEIGHT, WIDTH = 60, 90  # non-square, so a swapped height/width shows


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same tiny model twice: without and with the default vocabulary's text embeddings stored."""
    root = tmp_path_factory.mktemp("pipeline")
    return {
        "plain": save_checkpoint(root / "plain", store_default_vocabulary=False),
        "stored": save_checkpoint(root / "stored", store_default_vocabulary=True),
    }


@pytest.fixture(scope="module")
def segmenter(checkpoints):
    return pipeline("open-vocab-panoptic", model=checkpoints["plain"], device="cpu")


@pytest.fixture(scope="module")
def images():
    return [random_image(HEIGHT, WIDTH, seed=0), random_image(80, 50, seed=1), random_image(64, 64, seed=2)]


def mask_array(segment) -> np.ndarray:
    return np.asarray(segment["mask"])


def count_text_tower_calls(model):
    calls = []
    handle = model.clip.text.register_forward_hook(lambda module, args, output: calls.append(1))
    return calls, handle


def assert_same_results(actual, expected):
    assert [s["label"] for s in actual] == [s["label"] for s in expected]
    assert [s["score"] for s in actual] == pytest.approx([s["score"] for s in expected], abs=1e-5)
    for a, e in zip(actual, expected):
        assert (mask_array(a) == mask_array(e)).all()


# -------------------------------------------------------------------------------------------------------------- format


def test_single_image_matches_processor_model_postprocessing(segmenter, images):
    result = segmenter(images[0], candidate_labels=LABELS, stuff_labels=STUFF)

    processor, model = segmenter.processor, segmenter.model
    inputs = processor(images=[images[0]], text=LABELS, stuff_labels=STUFF)
    with torch.no_grad():
        outputs = model(
            pixel_values=inputs["pixel_values"],
            **{k: inputs[k] for k in ("input_ids", "attention_mask", "prompt_to_synonym", "synonym_to_class")},
        )
    expected = processor.post_process_panoptic_segmentation(
        outputs,
        LABELS,
        stuff_labels=STUFF,
        target_sizes=inputs["original_sizes"],
        reshaped_input_sizes=inputs["reshaped_input_sizes"],
    )[0]

    assert isinstance(result, list) and len(result) == len(expected["segments_info"]) > 0
    for segment, info in zip(result, expected["segments_info"]):
        assert set(segment) == {"score", "label", "mask"}
        assert segment["label"] == info["label"] == ["cat", "person", "grass"][info["label_id"]]
        assert segment["score"] == pytest.approx(info["score"])
        assert segment["mask"].mode == "L" and segment["mask"].size == (WIDTH, HEIGHT)
        assert set(np.unique(mask_array(segment))) <= {0, 255}
        assert (mask_array(segment) == 255).sum() > 0
        np.testing.assert_array_equal(mask_array(segment) == 255, expected["segmentation"].numpy() == info["id"])
    scores = [segment["score"] for segment in result]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("subtask", ["panoptic", "instance", "semantic"])
def test_panoptic_map_agrees_with_masks_and_segments_info(segmenter, images, subtask):
    result = segmenter(
        images[0], candidate_labels=LABELS, stuff_labels=STUFF, subtask=subtask, return_panoptic_map=True
    )
    assert set(result) == {"segments", "segmentation", "segments_info"}
    segmentation, info, segments = result["segmentation"], result["segments_info"], result["segments"]
    assert segmentation.shape == (HEIGHT, WIDTH) and segmentation.dtype == np.int32
    assert len(info) == len(segments) > 0
    assert [s["id"] for s in info] == list(range(1, len(info) + 1))
    assert [s["label"] for s in info] == [s["label"] for s in segments]
    assert [s["label"] for s in info] == [["cat", "person", "grass"][s["label_id"]] for s in info]
    assert set(np.unique(segmentation)) - {0} <= {s["id"] for s in info}
    for segment_info, segment in zip(info, segments):
        assert set(segment_info) == {"id", "label_id", "label", "score", "was_fused"}
        assert segment["mask"].size == (WIDTH, HEIGHT)
        inside = mask_array(segment) == 255
        if subtask == "instance":
            # Instances may overlap: the map shows the best one, every instance keeps its whole mask.
            assert (inside | (segmentation != segment_info["id"])).all()
            assert segment_info["label"] != "grass"  # stuff has no instances
        else:
            np.testing.assert_array_equal(inside, segmentation == segment_info["id"])
    if subtask == "semantic":
        assert all(s["score"] is None and s["was_fused"] for s in info)
        assert (segmentation > 0).all()  # every pixel has a class
        assert len({s["label"] for s in info}) == len(info)
    if subtask == "panoptic":
        assert all(s["was_fused"] == (s["label"] == "grass") for s in info)
        assert len([s for s in info if s["label"] == "grass"]) <= 1  # stuff merged per class


def test_list_and_batches_equal_single_images(segmenter, images):
    singles = [segmenter(image, candidate_labels=LABELS) for image in images]
    for batch_size in (None, 2, 3):
        kwargs = {} if batch_size is None else {"batch_size": batch_size}
        batched = segmenter(images, candidate_labels=LABELS, **kwargs)
        assert len(batched) == len(images)
        for result, single, image in zip(batched, singles, images):
            assert_same_results(result, single)
            assert all(segment["mask"].size == image.size for segment in result)


def test_images_keyword_and_file_paths(segmenter, images, tmp_path):
    path = tmp_path / "image.png"
    images[1].save(path)
    assert_same_results(
        segmenter(images=str(path), candidate_labels=LABELS), segmenter(images[1], candidate_labels=LABELS)
    )


# -------------------------------------------------------------------------------------------------------- vocabularies


def test_text_tower_runs_once_per_vocabulary(segmenter, images):
    calls, handle = count_text_tower_calls(segmenter.model)
    try:
        segmenter(images, candidate_labels=["zebra", "giraffe,camelopard", "savanna"], batch_size=2)
        assert len(calls) == 1  # two batches, one text-tower pass
        segmenter(images, candidate_labels=["zebra", "giraffe,camelopard", "savanna"])
        segmenter(images[0], candidate_labels=["zebra", "giraffe,camelopard", "savanna"], subtask="semantic")
        assert len(calls) == 1
        segmenter(images[:2], candidate_labels=["zebra", "savanna"], batch_size=2)
        assert len(calls) == 2
    finally:
        handle.remove()


def test_default_vocabulary_with_and_without_stored_embeddings(checkpoints, images):
    plain = pipeline("open-vocab-panoptic", model=checkpoints["plain"], device="cpu")
    stored = pipeline("open-vocab-panoptic", model=checkpoints["stored"], device="cpu")
    assert not plain.model.text_classifier.has_default_vocabulary
    assert stored.model.text_classifier.has_default_vocabulary

    explicit = plain(images, candidate_labels=VOCABULARY, stuff_labels=["grass"], return_panoptic_map=True)
    calls, handle = count_text_tower_calls(stored.model)
    try:
        from_stored = stored(images, return_panoptic_map=True)
    finally:
        handle.remove()
    assert calls == []  # stored embeddings: no text tower at all
    calls, handle = count_text_tower_calls(plain.model)
    try:
        from_names = plain(images, return_panoptic_map=True)
    finally:
        handle.remove()
    assert calls == []  # the same names as the explicit call above: embedded once, cached by the model

    for a, b, c in zip(from_stored, from_names, explicit):
        assert [s["label"] for s in a["segments_info"]] == [s["label"] for s in b["segments_info"]]
        assert [s["label"] for s in b["segments_info"]] == [s["label"] for s in c["segments_info"]]
        np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
        np.testing.assert_array_equal(b["segmentation"], c["segmentation"])
        labels = {s["label"] for s in a["segments_info"]}
        assert labels <= {"cat", "dog", "grass"}
        assert all(s["was_fused"] == (not IS_THING[s["label_id"]]) for s in a["segments_info"])


def test_vocabulary_file_and_vocabulary_object(segmenter, images, tmp_path):
    path = tmp_path / "vocabulary.txt"
    path.write_text("7:cat:thing\n9:person,child:thing\n11:grass,lawn:stuff\n")
    from_file = segmenter(images[0], vocabulary=str(path))
    from_list = segmenter(images[0], candidate_labels=LABELS, stuff_labels=STUFF)
    assert_same_results(from_file, from_list)
    assert_same_results(segmenter(images[0], vocabulary=Vocabulary.from_file(path)), from_list)


# ----------------------------------------------------------------------------------------------------- crafted outputs


def crafted_outputs(batch_size: int) -> PosSamOutput:
    """4 queries, classes (cat, dog, grass): cat on the left half, grass on the right half in two pieces, one void.

    The 128x128 canvas of a 40x80 image holds the image in its top 64 rows: mask rows 0..15 at stride 4. LDP and CLIP
    agree on each query's class distribution, so every ensemble mixes them into exactly these probabilities.
    """
    probabilities = torch.tensor(
        [[0.9, 0.0, 0.0, 0.1], [0.0, 0.0, 0.6, 0.4], [0.0, 0.0, 0.7, 0.3], [0.02, 0.03, 0.05, 0.9]]
    )
    masks = torch.full((4, 32, 32), -10.0)
    masks[0, :, :16] = 10.0
    masks[1, :8, 16:] = 10.0
    masks[2, 8:, 16:] = 10.0
    return PosSamOutput(
        class_queries_logits=probabilities.log().expand(batch_size, -1, -1).clone(),
        clip_logits=probabilities[:, :3].log().expand(batch_size, -1, -1).clone(),
        iou_scores=torch.tensor([0.8, 0.5, 0.5, 0.9]).expand(batch_size, -1).clone(),
        masks_queries_logits=masks.expand(batch_size, -1, -1, -1).clone(),
    )


@pytest.fixture
def crafted(segmenter, monkeypatch):
    """Replaces the model's forward with crafted outputs; returns the keyword arguments each call received."""
    received = []

    def forward(**kwargs):
        received.append(kwargs)
        return crafted_outputs(kwargs["pixel_values"].shape[0])

    monkeypatch.setattr(segmenter.model, "forward", forward)
    return received


def test_crafted_outputs_panoptic(segmenter, crafted):
    image = np.zeros((40, 80, 3), np.uint8)
    results = segmenter(
        [image, image],
        candidate_labels=["cat", "dog", "grass"],
        stuff_labels=["grass"],
        batch_size=2,
        return_panoptic_map=True,
    )
    assert len(crafted) == 1 and crafted[0]["pixel_values"].shape == (2, 3, 128, 128)
    assert crafted[0]["input_ids"].shape[0] == 3 * 14
    assert not {"ensemble_mode", "seen_classes"} & set(crafted[0])  # the ensemble is post-processing
    for result in results:
        info = result["segments_info"]
        assert [(s["label"], s["was_fused"]) for s in info] == [("cat", False), ("grass", True)]
        assert info[0]["score"] == pytest.approx(0.9 * 0.8)
        assert info[1]["score"] == pytest.approx(0.7 * 0.5)  # the best of the two merged grass queries
        segmentation = result["segmentation"]
        assert segmentation.shape == (40, 80)
        # Only at the boundary (x = 40 in the image, 64 on the canvas) may mask probabilities all fall below 0.5.
        assert (segmentation[:, :39] == 1).all() and (segmentation[:, 41:] == 2).all()
        np.testing.assert_array_equal(np.asarray(result["segments"][1]["mask"]) == 255, segmentation == 2)


def test_crafted_outputs_instance_and_semantic(segmenter, crafted):
    image = np.zeros((40, 80, 3), np.uint8)
    instances = segmenter(image, candidate_labels=["cat", "dog", "grass"], stuff_labels=["grass"], subtask="instance")
    assert [s["label"] for s in instances] == ["cat"]  # grass is stuff; the void query's mask is empty
    assert instances[0]["score"] == pytest.approx(0.9 * 0.8, rel=1e-3)  # x mean mask probability ~ 1
    cat = np.asarray(instances[0]["mask"]) == 255
    assert cat[:, :39].all() and not cat[:, 41:].any()

    semantic = segmenter(image, candidate_labels=["cat", "dog", "grass"], subtask="semantic")
    assert [(s["label"], s["score"]) for s in semantic] == [("cat", None), ("grass", None)]
    assert (np.asarray(semantic[1]["mask"])[:, 41:] == 255).all()


def test_crafted_outputs_thresholds(segmenter, crafted):
    image = np.zeros((40, 80, 3), np.uint8)
    # threshold is on score = class probability x mask score: 0.5 keeps cat (0.72) only.
    kept = segmenter(image, candidate_labels=["cat", "dog", "grass"], stuff_labels=["grass"], threshold=0.5)
    assert [s["label"] for s in kept] == ["cat"]
    assert segmenter(image, candidate_labels=["cat", "dog", "grass"], threshold=0.9) == []


def test_geometric_mode_passes_seen_classes_to_post_processing(segmenter, images, monkeypatch):
    forward_calls, received = [], []
    original_forward = segmenter.model.forward
    original_post_process = segmenter.processor.image_processor.post_process_panoptic_segmentation

    def forward_spy(**kwargs):
        forward_calls.append(kwargs)
        return original_forward(**kwargs)

    def post_process_spy(outputs, **kwargs):
        received.append(kwargs)
        return original_post_process(outputs, **kwargs)

    monkeypatch.setattr(segmenter.model, "forward", forward_spy)
    monkeypatch.setattr(segmenter.processor.image_processor, "post_process_panoptic_segmentation", post_process_spy)
    result = segmenter(images[0], candidate_labels=["cat", "person,child", "lawn,grass"], ensemble_mode="geometric")
    assert isinstance(result, list)
    # config.training_vocabulary = ["cat", "grass"]: a class is seen when any of its names was trained on.
    assert received[-1]["ensemble_mode"] == "geometric" and received[-1]["config"] is segmenter.model.config
    assert received[-1]["seen_classes"].tolist() == [True, False, True]
    segmenter(images[0], return_panoptic_map=True, ensemble_mode="geometric")
    assert received[-1]["seen_classes"].tolist() == [True, False, True]  # default vocabulary cat, dog, grass
    segmenter(images[0], candidate_labels=LABELS, ensemble_mode="clip_only")
    assert "seen_classes" not in received[-1] and received[-1]["ensemble_mode"] == "clip_only"
    # The model's forward pass is the same in every mode.
    assert all(not {"ensemble_mode", "seen_classes"} & set(call) for call in forward_calls)


def test_geometric_mode_needs_training_vocabulary(segmenter, images, monkeypatch):
    monkeypatch.setattr(segmenter.model.config, "training_vocabulary", None)
    with pytest.raises(ValueError, match="training_vocabulary"):
        segmenter(images[0], candidate_labels=LABELS, ensemble_mode="geometric")


# -------------------------------------------------------------------------------------------------------------- errors


def test_unreadable_and_missing_images_are_named(segmenter, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("this is not a JPEG")
    with pytest.raises(ValueError, match="broken.jpg"):
        segmenter(str(broken), candidate_labels=LABELS)
    with pytest.raises(ValueError, match="missing.png"):
        segmenter([str(tmp_path / "missing.png")], candidate_labels=LABELS)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"candidate_labels": []}, VocabularyError, "empty"),
        ({"candidate_labels": ["cat", "dog", "cat"]}, VocabularyError, r"Duplicate labels.*cat"),
        ({"candidate_labels": ["cat", ""]}, VocabularyError, "empty class name"),
        ({"candidate_labels": ["cat", "dog"], "stuff_labels": ["sky"]}, VocabularyError, "'sky' is not one of"),
        ({"candidate_labels": "coco_panoptic"}, VocabularyError, r"names a shipped vocabulary.*vocabulary='coco_panoptic'"),
        ({"candidate_labels": "cat,,dog"}, VocabularyError, "empty class name in item 2"),
        ({"candidate_labels": ["cat"], "vocabulary": "coco_panoptic"}, ValueError, "either candidate_labels"),
        ({"vocabulary": "coco_panoptic", "stuff_labels": "sky"}, ValueError, "own thing/stuff flags"),
        ({"vocabulary": ["cat"]}, TypeError, "class names go to candidate_labels"),
        ({"vocabulary": "no_such_vocabulary"}, VocabularyError, "neither a shipped vocabulary"),
        ({"stuff_labels": ["grass"]}, ValueError, "without candidate_labels"),
        ({"candidate_labels": LABELS, "subtask": "depth"}, ValueError, "subtask must be one of"),
        ({"candidate_labels": LABELS, "ensemble_mode": "mean"}, ValueError, "ensemble_mode must be one of"),
        ({"candidate_labels": LABELS, "threshold": "high"}, TypeError, "threshold must be a number"),
        ({"candidate_labels": LABELS, "mask_threshold": 1.5}, ValueError, r"mask_threshold must be in \[0, 1\]"),
        ({"labels": LABELS}, TypeError, r"Unknown parameter\(s\) \['labels'\]"),
    ],
)
def test_bad_arguments_raise_clear_errors(segmenter, images, kwargs, error, message):
    with pytest.raises(error, match=message):
        segmenter(images[0], **kwargs)


def test_batched_array_and_missing_processor_are_rejected(segmenter):
    with pytest.raises(ValueError, match="pass a list of images"):
        segmenter(np.zeros((2, 32, 32, 3), np.uint8), candidate_labels=LABELS)
    with pytest.raises(ValueError, match="pass a list of images"):
        segmenter((np.zeros((32, 32, 3), np.uint8),) * 2, candidate_labels=LABELS)
    with pytest.raises(ValueError, match="needs images"):
        segmenter(candidate_labels=LABELS)
    with pytest.raises(TypeError, match="needs a PosSamProcessor"):
        OpenVocabPanopticPipeline(model=segmenter.model, device="cpu")


def test_direct_construction_from_objects():
    model, processor = tiny_model(), tiny_processor()
    segmenter = OpenVocabPanopticPipeline(model=model, processor=processor, device="cpu")
    result = segmenter(PIL.Image.new("RGB", (30, 20), "white"), candidate_labels=LABELS, return_panoptic_map=True)
    assert result["segmentation"].shape == (20, 30)
