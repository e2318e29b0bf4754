"""Hub readiness of a saved PosSAM folder: `auto_map`, `custom_pipelines` and the thin remote-code modules, loaded in
fresh processes that never import `possam` (offline, with their own HF_MODULES_CACHE)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from pipeline_testing import save_checkpoint, single_thread, tiny_model  # noqa: F401  (autouse fixture)
from transformers import AutoConfig, AutoProcessor, pipeline

import possam
from possam import PosSamImageProcessor, PosSamModel, PosSamProcessor
from possam.configuration import remote_code


LABELS = ["cat", "dog,puppy", "grass"]
OUTPUT_KEYS = ("class_queries_logits", "masks_queries_logits", "iou_scores", "clip_logits")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("hub") / "possam-tiny", store_default_vocabulary=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "scene.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(path)
    return str(path)


def run_fresh(script: str, tmp_path, blocked: bool = False) -> subprocess.CompletedProcess:
    """Runs `script` in a new interpreter that has not imported possam (optionally one where it cannot be imported)."""
    prelude = textwrap.dedent(
        """
        import sys
        class _NoPossam:  # behaves as if the package were not installed
            def find_spec(self, name, path=None, target=None):
                if name == "possam" or name.startswith("possam."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        if BLOCKED:
            sys.meta_path.insert(0, _NoPossam())
        """
    ).replace("BLOCKED", str(blocked))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )


def test_saved_folder_names_its_remote_code(folder):
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    assert config["auto_map"] == {
        "AutoConfig": "configuration_possam.PosSamConfig",
        "AutoModel": "modeling_possam.PosSamModel",
        "AutoModelForImageSegmentation": "modeling_possam.PosSamModel",
        "AutoModelForUniversalSegmentation": "modeling_possam.PosSamModel",
        "AutoImageProcessor": "image_processing_possam.PosSamImageProcessor",
        "AutoProcessor": "processing_possam.PosSamProcessor",
    }
    assert config["custom_pipelines"]["open-vocab-panoptic"]["impl"] == "pipeline_possam.OpenVocabPanopticPipeline"
    with open(os.path.join(folder, "processor_config.json"), encoding="utf-8") as handle:
        processor = json.load(handle)
    assert processor["auto_map"] == {"AutoProcessor": "processing_possam.PosSamProcessor"}
    assert processor["image_processor"]["auto_map"] == {"AutoImageProcessor": "image_processing_possam.PosSamImageProcessor"}
    # Each named module is one import of the installed package's class.
    expected = {"configuration_possam": possam.PosSamConfig, "modeling_possam": PosSamModel,
                "image_processing_possam": PosSamImageProcessor, "processing_possam": PosSamProcessor,
                "pipeline_possam": possam.OpenVocabPanopticPipeline}
    for module, cls in expected.items():
        namespace = {}
        with open(os.path.join(folder, f"{module}.py"), encoding="utf-8") as handle:
            exec(handle.read(), namespace)
        assert namespace[cls.__name__] is cls, module


def test_image_processor_alone_carries_its_auto_map(tmp_path):
    PosSamImageProcessor(size={"longest_edge": 128}).save_pretrained(tmp_path)
    with open(tmp_path / "preprocessor_config.json", encoding="utf-8") as handle:
        saved = json.load(handle)
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_possam.PosSamImageProcessor"}
    assert sorted(name for name in os.listdir(tmp_path) if name.endswith(".py")) == ["image_processing_possam.py"]
    assert PosSamImageProcessor.from_pretrained(tmp_path).padded_size == 128


def test_installed_package_needs_no_trust_remote_code(folder, image):
    """With `import possam`, the registered classes and task are used: no `trust_remote_code`, and the loaded config
    holds no `custom_pipelines` (which would make transformers demand it for the named task)."""
    config = AutoConfig.from_pretrained(folder)
    assert not hasattr(config, "custom_pipelines") and not hasattr(config, "auto_map")
    assert type(AutoProcessor.from_pretrained(folder)) is PosSamProcessor
    segmenter = pipeline("open-vocab-panoptic", model=folder)
    assert segmenter(image, candidate_labels=LABELS)[0]["label"] in {"cat", "dog", "grass"}


def test_register_for_auto_class_then_save_pretrained(tmp_path, monkeypatch):
    monkeypatch.setattr(remote_code, "_remote_code_in_use", False)
    model = tiny_model()
    PosSamModel.register_for_auto_class("AutoModel")  # transformers' FileNotFoundError came from here
    PosSamProcessor.register_for_auto_class()
    assert PosSamModel._auto_class is None
    model.save_pretrained(tmp_path)
    with open(tmp_path / "config.json", encoding="utf-8") as handle:
        assert json.load(handle)["auto_map"]["AutoModel"] == "modeling_possam.PosSamModel"


FRESH = """
import json, sys
import numpy as np, torch
from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForUniversalSegmentation,
                          AutoProcessor, pipeline)
FOLDER, IMAGE, OUT, LABELS = {args}
OUTPUT_KEYS = {keys!r}
# Without trust_remote_code: a clear refusal, never a bare tokenizer.
try:
    processor = AutoProcessor.from_pretrained(FOLDER)
    refusal = f"returned {{type(processor).__name__}}"
except ValueError as error:
    refusal = str(error)
assert "possam" not in sys.modules, "possam was imported before the folder's remote code"
config = AutoConfig.from_pretrained(FOLDER, trust_remote_code=True)
model = AutoModel.from_pretrained(FOLDER, trust_remote_code=True).eval()
universal = AutoModelForUniversalSegmentation.from_pretrained(FOLDER, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(FOLDER, trust_remote_code=True)
image_processor = AutoImageProcessor.from_pretrained(FOLDER, trust_remote_code=True)
segmenter = pipeline(model=FOLDER, trust_remote_code=True)  # no task: config.json's custom_pipelines names it
again = pipeline(model=FOLDER, trust_remote_code=True)
inputs = processor(images=IMAGE, text=LABELS)
with torch.inference_mode():
    outputs = model(**inputs)
segments = segmenter(IMAGE, candidate_labels=LABELS)
# The Hub's "Use this model" snippet for an image-segmentation model with custom code.
stock = pipeline("image-segmentation", model=FOLDER, trust_remote_code=True)(IMAGE, threshold=0.0)
json.dump({{
    "refusal": refusal,
    "types": [type(x).__module__ + "." + type(x).__name__ for x in (config, model, universal, processor, image_processor, segmenter, again)],
    "task": segmenter.task,
    "outputs": {{key: outputs[key].tolist() for key in OUTPUT_KEYS}},
    "segments": [[s["label"], s["score"], int(np.asarray(s["mask"]).sum())] for s in segments],
    "stock_labels": sorted({{s["label"] for s in stock}}),
}}, open(OUT, "w"))
"""


def test_fresh_process_loads_the_folder_through_its_remote_code(folder, image, tmp_path):
    out = tmp_path / "fresh.json"
    args = ", ".join(repr(value) for value in (folder, image, str(out))) + f", {LABELS!r}"
    result = run_fresh(FRESH.format(args=args, keys=OUTPUT_KEYS), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = json.loads(out.read_text())
    assert "trust_remote_code=True" in fresh["refusal"]
    assert fresh["types"] == [
        "possam.configuration.configuration_possam.PosSamConfig",
        "possam.modeling_possam.PosSamModel",
        "possam.modeling_possam.PosSamModel",
        "possam.processing.processing_possam.PosSamProcessor",
        "possam.processing.image_processing_possam.PosSamImageProcessor",
        "possam.processing.pipeline_possam.OpenVocabPanopticPipeline",
        "possam.processing.pipeline_possam.OpenVocabPanopticPipeline",
    ]
    assert fresh["task"] == "open-vocab-panoptic"
    assert fresh["stock_labels"] and set(fresh["stock_labels"]) <= {"cat", "dog", "grass"}  # the model's vocabulary
    # Same outputs as the installed package in this process.
    model, processor = PosSamModel.from_pretrained(folder).eval(), PosSamProcessor.from_pretrained(folder)
    with torch.inference_mode():
        expected = model(**processor(images=image, text=LABELS))
    for key in OUTPUT_KEYS:  # both processes on one thread: the same float reductions, equal results
        assert torch.equal(torch.tensor(fresh["outputs"][key]), expected[key]), key
    segments = pipeline("open-vocab-panoptic", model=folder)(image, candidate_labels=LABELS)
    expected_segments = [[s["label"], s["score"], int(np.asarray(s["mask"]).sum())] for s in segments]
    assert len(fresh["segments"]) == len(expected_segments) > 0
    for (label, score, area), (label_e, score_e, area_e) in zip(fresh["segments"], expected_segments):
        assert (label, area) == (label_e, area_e) and score == pytest.approx(score_e, abs=1e-6)


def test_without_possam_installed_transformers_names_the_package(folder, tmp_path):
    script = f"""
    from transformers import AutoModel
    try:
        AutoModel.from_pretrained({folder!r}, trust_remote_code=True)
    except ImportError as error:
        print(error)
    """
    result = run_fresh(script, tmp_path, blocked=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "requires the following packages that were not found in your environment: possam" in result.stdout
