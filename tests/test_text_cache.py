"""Vocabulary embeddings cached on disk: a second process with the same text tower and vocabulary runs it 0 times."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import make_vocabulary, tiny_model


# One process: a saved tiny model loaded back, the text tower's calls counted, one vocabulary embedded.
SCRIPT = """
import json, sys, torch
from possam import PosSamModel
model = PosSamModel.from_pretrained(sys.argv[1]).eval()
calls = []
model.clip.text.register_forward_hook(lambda *args: calls.append(1))
text = model.get_text_embeddings(**torch.load(sys.argv[2]))
print(json.dumps({"calls": len(calls), "embeddings": text.synonym_embeddings.tolist()}))
"""


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    tiny_model().save_pretrained(directory)
    return directory


def run_process(model_dir, hf_home, classes=3, seed=0, **env_overrides):
    env = {key: value for key, value in os.environ.items() if key not in ("POSSAM_NO_TEXT_CACHE", "POSSAM_TEXT_CACHE")}
    env.update(HF_HOME=str(hf_home))
    env.update(env_overrides)
    vocabulary = hf_home / f"vocabulary_{classes}_{seed}.pt"
    torch.save(make_vocabulary(classes, seed=seed), vocabulary)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model_dir), str(vocabulary)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_second_process_runs_the_text_tower_zero_times(saved_model, tmp_path):
    first = run_process(saved_model, tmp_path)
    second = run_process(saved_model, tmp_path)
    assert first["calls"] == 1 and second["calls"] == 0
    assert second["embeddings"] == first["embeddings"]
    files = list((tmp_path / "possam" / "text_embeddings").glob("*.safetensors"))
    assert len(files) == 1
    # Another vocabulary is a miss, then cached beside the first.
    assert run_process(saved_model, tmp_path, classes=4, seed=1)["calls"] == 1
    assert len(list((tmp_path / "possam" / "text_embeddings").glob("*.safetensors"))) == 2

    # Other text-tower weights, same vocabulary: a miss.
    model = tiny_model()
    with torch.no_grad():
        model.clip.text.text_projection.weight.mul_(2)
    other = tmp_path / "other"
    model.save_pretrained(other)
    assert run_process(other, tmp_path)["calls"] == 1


def test_opt_out(saved_model, tmp_path):
    assert run_process(saved_model, tmp_path, POSSAM_NO_TEXT_CACHE="1")["calls"] == 1
    assert not (tmp_path / "possam").exists()


def test_in_process_opt_out_and_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.delenv("POSSAM_NO_TEXT_CACHE")
    monkeypatch.setenv("POSSAM_TEXT_CACHE", str(tmp_path))
    model, vocabulary = tiny_model().eval(), make_vocabulary(3)
    model.text_classifier.use_disk_cache = False
    model.get_text_embeddings(**vocabulary)
    assert list(tmp_path.iterdir()) == []
    model.text_classifier.use_disk_cache = True
    model.text_classifier.clear_cache()
    expected = model.get_text_embeddings(**vocabulary).synonym_embeddings
    (cache_file,) = tmp_path.glob("*.safetensors")
    cache_file.write_bytes(b"not a safetensors file")
    model.text_classifier.clear_cache()
    calls = []
    model.clip.text.register_forward_hook(lambda *args: calls.append(1))
    torch.testing.assert_close(model.get_text_embeddings(**vocabulary).synonym_embeddings, expected)
    assert calls == [1]
