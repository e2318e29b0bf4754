"""Toy CLIP pretraining (`possam pretrain-clip`): it learns, and its folder loads like a converted OpenCLIP one."""

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from possam import PosSamModel
from possam.training.clip_pretraining import ClipPretrainingArguments, pretrain_toy_clip, scene_caption


def test_a_short_pretraining_lowers_the_loss_and_beats_chance_on_unseen_crops(tmp_path):
    record = pretrain_toy_clip(
        tmp_path / "clip", ClipPretrainingArguments(steps=60, batch_size=16, num_scenes=48, learning_rate=3e-3),
        num_eval_scenes=24,
    )
    assert record["loss_last"] < record["loss_first"] - 0.3, record
    assert record["chance_accuracy"] == round(100 / 18, 1)
    # Classified among all 18 classes, crops of classes PosSAM will never see labels of.
    assert record["crop_unseen_accuracy"] > 2 * record["chance_accuracy"], record


def test_cli_writes_clip_towers_that_from_pretrained_backbones_loads(tmp_path):
    clip_dir, sam_dir = tmp_path / "clip", tmp_path / "sam"
    result = subprocess.run(
        [sys.executable, "-m", "possam", "pretrain-clip", "--out", str(clip_dir), "--steps", "2", "--batch_size", "4",
         "--num_scenes", "8"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout[result.stdout.index("{"):])
    assert record["arguments"]["steps"] == 2 and json.load(open(clip_dir / "pretraining.json")) == record
    assert json.load(open(clip_dir / "config.json"))["model_type"] == "possam_clip"

    from transformers import SamVisionModel

    from possam import possam_preset

    SamVisionModel(possam_preset("tiny").sam_vision_config).save_pretrained(sam_dir)
    model = PosSamModel.from_pretrained_backbones(sam=str(sam_dir), clip=str(clip_dir), config="tiny")
    saved = load_file(clip_dir / "model.safetensors")
    loaded = model.clip.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(saved[key], loaded[key]) for key in saved)
    assert model.config.ldp_hidden_size == model.config.clip_config.projection_dim == 64
    assert not any(parameter.requires_grad for parameter in model.clip.parameters())

    bad = subprocess.run([sys.executable, "-m", "possam", "pretrain-clip", "--out", str(clip_dir), "--steps", "-1"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--steps must be >= 0, got -1" in bad.stderr


def test_scene_captions_name_things_then_stuff():
    import numpy as np

    names, is_thing = [["ball"], ["kite"], ["sky"], ["grass", "lawn"]], [True, True, False, False]
    rng = np.random.default_rng(0)
    assert scene_caption(names, is_thing, [0, 1, 1, 2], rng) == "a photo of a ball and a kite, with sky."
    assert scene_caption(names, is_thing, [2], rng) == "a photo of sky."
