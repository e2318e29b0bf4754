"""The SAM and CLIP towers stay frozen on every way a model is loaded, and the optimizer holds only what trains."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from conversion_helpers import tiny_transformers_clip, tiny_transformers_sam
from test_training_trainer import StopAfterSaving, make_trainer
from transformers import AutoModel

from possam import PosSamModel


def trainable_names(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    model = tiny_model()
    folder = tmp_path_factory.mktemp("tiny_possam")
    model.save_pretrained(folder)
    return model, folder


def test_a_fresh_model_trains_only_what_possam_adds():
    model = tiny_model()
    trainable = trainable_names(model)
    assert trainable and not any(name.startswith(("sam.", "clip.")) for name in trainable)
    assert all(not parameter.requires_grad for parameter in [*model.sam.parameters(), *model.clip.parameters()])


@pytest.mark.parametrize(
    "load_kwargs",
    [{}, {"dtype": torch.bfloat16}, {"device_map": "cpu"}, {"device_map": "auto"}, {"output_loading_info": True}],
    ids=["default", "bfloat16", "device_map_cpu", "device_map_auto", "with_loading_info"],
)
@pytest.mark.parametrize("loader", [PosSamModel, AutoModel], ids=["PosSamModel", "AutoModel"])
def test_from_pretrained_keeps_the_towers_frozen(saved_model, loader, load_kwargs):
    model, folder = saved_model
    loaded = loader.from_pretrained(folder, **load_kwargs)
    if load_kwargs.get("output_loading_info"):
        loaded, _ = loaded
    assert trainable_names(loaded) == trainable_names(model)
    count = sum(parameter.numel() for parameter in loaded.parameters() if parameter.requires_grad)
    assert count == sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def test_from_pretrained_backbones_keeps_the_towers_frozen(tmp_path):
    tiny_transformers_clip(seed=0).save_pretrained(tmp_path / "clip")
    tiny_transformers_sam(seed=1).save_pretrained(tmp_path / "sam")
    built = PosSamModel.from_pretrained_backbones(sam=str(tmp_path / "sam"), clip=str(tmp_path / "clip"), config="tiny")
    trainable = trainable_names(built)
    assert trainable and not any(name.startswith(("sam.", "clip.")) for name in trainable)
    assert trainable == trainable_names(PosSamModel(built.config))


def optimizer_parameter_count(trainer) -> int:
    return sum(parameter.numel() for group in trainer.optimizer.param_groups for parameter in group["params"])


def test_optimizer_holds_only_trainable_parameters_also_after_resuming(synthetic_splits, saved_model, tmp_path):
    reference, folder = saved_model
    expected = sum(parameter.numel() for parameter in reference.parameters() if parameter.requires_grad)
    settings = {"max_steps": 2, "save_strategy": "steps", "save_steps": 1, "dataloader_num_workers": 0}
    interrupted = make_trainer(
        synthetic_splits, tmp_path, model=PosSamModel.from_pretrained(folder), callbacks=[StopAfterSaving()], **settings
    )
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    assert optimizer_parameter_count(interrupted) == expected

    resumed = make_trainer(synthetic_splits, tmp_path, model=PosSamModel.from_pretrained(folder), **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    assert optimizer_parameter_count(resumed) == expected
    assert trainable_names(resumed.model) == trainable_names(reference)
    state = torch.load(tmp_path / "checkpoint-1" / "optimizer.pt", weights_only=True)["state"]
    assert sum(entry["exp_avg"].numel() for entry in state.values()) == expected
