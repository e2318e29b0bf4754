"""`possam export-onnx`: the image path exported with torch.onnx (dynamo) runs in ONNX Runtime and matches PyTorch
within 1e-4 on the tiny preset, for other batch sizes and vocabularies than the export's example, and its outputs
post-process into the same segments."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch
from pipeline_testing import random_image, save_checkpoint, single_thread  # noqa: F401  (autouse fixture)

from possam import PosSamModel, PosSamProcessor, PosSamTextEmbeddings
from possam.onnx_export import INPUT_NAMES, OUTPUT_NAMES

ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint exported by the command line, as a user runs it (a fresh process)."""
    root = tmp_path_factory.mktemp("onnx")
    folder = save_checkpoint(root / "model", store_default_vocabulary=True)
    out = root / "onnx" / "possam.onnx"
    run = subprocess.run(
        [sys.executable, "-m", "possam", "export-onnx", folder, "--out", str(out), "--labels", "cat,dog|puppy,sky"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return folder, out, run.stdout


@pytest.fixture(scope="module")
def session(exported):
    return onnxruntime.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def model_and_processor(exported):
    folder = exported[0]
    return PosSamModel.from_pretrained(folder).eval(), PosSamProcessor.from_pretrained(folder)


def test_command_checks_and_reports(exported):
    _, out, stdout = exported
    assert out.is_file() and f"Wrote {out}" in stdout
    for name in OUTPUT_NAMES:
        line = next(line for line in stdout.splitlines() if line.startswith(f"max |onnxruntime - pytorch| {name}:"))
        assert float(line.rsplit(" ", 1)[1]) <= ATOL
    assert "ONNX Runtime matches PyTorch within 0.0001." in stdout
    text = PosSamTextEmbeddings.load(str(out.with_suffix(".text.safetensors")))
    assert text.synonym_to_class.tolist() == [0, 1, 1, 2] and text.synonym_embeddings.shape == (4, 32)


def test_graph_signature(session):
    inputs = {value.name: value.shape for value in session.get_inputs()}
    outputs = {value.name: value.shape for value in session.get_outputs()}
    assert list(inputs) == list(INPUT_NAMES) and list(outputs) == list(OUTPUT_NAMES)
    assert inputs["pixel_values"] == ["batch", 3, 128, 128]
    assert inputs["synonym_embeddings"] == ["num_synonyms", 32] and inputs["synonym_to_class"] == ["num_synonyms"]
    assert outputs["class_queries_logits"] == ["batch", 10, "num_classes_plus_void"]
    assert outputs["clip_logits"] == ["batch", 10, "num_classes"]
    assert outputs["masks_queries_logits"] == ["batch", 10, 32, 32]


@pytest.mark.parametrize("batch_size, labels", [(1, "cat"), (3, "cat|kitty,dog,grass|lawn|turf,sky,road|street")])
def test_onnx_runtime_matches_pytorch(session, model_and_processor, batch_size, labels):
    model, processor = model_and_processor
    images = [random_image(60 + 10 * index, 90, seed=index) for index in range(batch_size)]
    inputs = processor(images=images, text=labels)
    text = model.get_text_embeddings(
        inputs["input_ids"], inputs["attention_mask"], inputs["prompt_to_synonym"], inputs["synonym_to_class"]
    )
    with torch.no_grad():
        expected = model(**inputs)
    got = session.run(
        list(OUTPUT_NAMES),
        {
            "pixel_values": inputs["pixel_values"].numpy(),
            "synonym_embeddings": text.synonym_embeddings.numpy(),
            "synonym_to_class": text.synonym_to_class.numpy(),
        },
    )
    num_classes = len(labels.split(","))
    for name, value in zip(OUTPUT_NAMES, got):
        reference = expected[name].numpy()
        assert value.shape == reference.shape, name
        assert np.abs(value - reference).max() <= ATOL, (name, float(np.abs(value - reference).max()))
    assert got[0].shape[-1] == num_classes + 1 and got[1].shape[-1] == num_classes


def test_onnx_outputs_post_process_like_the_model(session, model_and_processor):
    """The ensemble and post-processing run in Python on ONNX Runtime's raw outputs."""
    model, processor = model_and_processor
    image = random_image(70, 90, seed=5)
    labels = "cat,dog|puppy,grass"
    inputs = processor(images=image, text=labels, stuff_labels="grass")
    text = model.get_text_embeddings(
        inputs["input_ids"], inputs["attention_mask"], inputs["prompt_to_synonym"], inputs["synonym_to_class"]
    )
    with torch.no_grad():
        expected = model(**inputs)
    arrays = session.run(
        list(OUTPUT_NAMES),
        {
            "pixel_values": inputs["pixel_values"].numpy(),
            "synonym_embeddings": text.synonym_embeddings.numpy(),
            "synonym_to_class": text.synonym_to_class.numpy(),
        },
    )
    from_onnx = {name: torch.from_numpy(array) for name, array in zip(OUTPUT_NAMES, arrays)}  # raw logits, as a dict
    options = {
        "target_sizes": inputs["original_sizes"],
        "reshaped_input_sizes": inputs["reshaped_input_sizes"],
        "config": model.config,
    }
    ours = processor.post_process_panoptic_segmentation(from_onnx, labels, stuff_labels="grass", **options)[0]
    reference = processor.post_process_panoptic_segmentation(expected, labels, stuff_labels="grass", **options)[0]
    assert ours["segments_info"] and [s["label"] for s in ours["segments_info"]] == [
        s["label"] for s in reference["segments_info"]
    ]
    assert [s["score"] for s in ours["segments_info"]] == pytest.approx(
        [s["score"] for s in reference["segments_info"]], abs=ATOL
    )
    assert torch.equal(ours["segmentation"], reference["segmentation"])


def test_missing_model_is_a_one_line_error(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "possam", "export-onnx", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: cannot load the PosSAM model '{tmp_path / 'nowhere'}'")
    assert not (tmp_path / "m.onnx").exists()
