"""PosSAM on transformers checkpoints (ViT `CLIPModel`, `SamModel` folder); Hub ids reach `from_pretrained` as-is."""

from __future__ import annotations

import pytest
import torch
from conftest import make_vocabulary
from conversion_helpers import tiny_transformers_clip, tiny_transformers_sam
from transformers import AutoConfig, CLIPModel, SamModel

from possam import PosSamModel
from possam.backbones import convert_transformers_clip, load_clip_backbone
from possam.checkpoint_io import CheckpointError


TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def clip_model():
    return tiny_transformers_clip(seed=0)


@pytest.fixture(scope="module")
def sam_model():
    return tiny_transformers_sam(seed=1)


@pytest.fixture(scope="module")
def possam_on_transformers_checkpoints(clip_model, sam_model, tmp_path_factory):
    clip_dir, sam_dir = tmp_path_factory.mktemp("clip"), tmp_path_factory.mktemp("sam")
    clip_model.save_pretrained(clip_dir)
    sam_model.save_pretrained(sam_dir)
    return PosSamModel.from_pretrained_backbones(sam=str(sam_dir), clip=str(clip_dir), config="tiny")


def test_vit_clip_towers_equal_the_clip_model(possam_on_transformers_checkpoints, clip_model):
    clip = possam_on_transformers_checkpoints.clip
    config = clip.config
    assert not config.is_convnext and config.projection_dim == 24
    assert config.vision_config.projection_dim == config.text_config.projection_dim == 24
    assert possam_on_transformers_checkpoints.config.ldp_hidden_size == 24
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    input_ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407, 0], [49406, 3562, 49407, 0, 0, 0, 0, 0]])
    attention_mask = (input_ids != 0).long()
    with torch.no_grad():
        vision = clip_model.vision_model(images)
        patch_tokens = clip_model.vision_model.post_layernorm(vision.last_hidden_state[:, 1:])
        expected_dense = clip_model.visual_projection(patch_tokens).transpose(1, 2).reshape(2, 24, 4, 4)
        assert expected_dense.abs().mean() > 0.1
        assert (clip.vision.dense_features(images) - expected_dense).abs().max() <= TOLERANCE
        expected_image = clip_model.visual_projection(vision.pooler_output)
        assert (clip.vision.model(images).image_embeds - expected_image).abs().max() <= TOLERANCE
        expected_text = clip_model.text_projection(clip_model.text_model(input_ids, attention_mask).pooler_output)
        assert (clip.encode_text(input_ids, attention_mask) - expected_text).abs().max() <= TOLERANCE
    assert clip.logit_scale.item() == clip_model.logit_scale.item()


def test_sam_tower_equals_the_sam_model_and_towers_are_frozen(possam_on_transformers_checkpoints, sam_model):
    model = possam_on_transformers_checkpoints
    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(
            model.sam(pixels).last_hidden_state, sam_model.vision_encoder(pixels).last_hidden_state, atol=TOLERANCE
        )
    assert not any(p.requires_grad for p in model.sam.parameters()) and not any(
        p.requires_grad for p in model.clip.parameters()
    )
    frozen_parts = ("sam.", "sam_prompt_decoder.", "clip.")
    assert all(p.requires_grad for name, p in model.named_parameters() if not name.startswith(frozen_parts))
    # The ViT tower interpolates its position embeddings to the 128x128 SAM input: the whole model runs.
    with torch.no_grad():
        output = model(pixel_values=pixels, **make_vocabulary(3))
    assert output.class_queries_logits.shape == (1, 10, 4) and torch.isfinite(output.clip_logits).all()


def test_missing_weights_in_a_clip_model_are_listed(clip_model):
    class Truncated(torch.nn.Module):  # what a CLIPModel with a lost text projection would hand over
        config = clip_model.config
        logit_scale = clip_model.logit_scale

        def state_dict(self):
            return {k: v for k, v in clip_model.state_dict().items() if k != "text_projection.weight"}

    with pytest.raises(CheckpointError, match=r"missing keys \(1\): text_projection.weight"):
        convert_transformers_clip(Truncated(), "tiny-clip")


def test_a_clip_folder_of_another_model_is_refused(sam_model, tmp_path):
    sam_model.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"expected a transformers CLIPModel .* got model_type 'sam'"):
        load_clip_backbone(str(tmp_path))


def test_hub_ids_reach_from_pretrained_unchanged(monkeypatch, clip_model, sam_model):
    """No network here: the Hub loaders are replaced by recorders; the ids and loading options must arrive verbatim."""
    calls = []
    configs = {"facebook/sam-vit-base": sam_model.config, "openai/clip-vit-base-patch16": clip_model.config}
    models = {"facebook/sam-vit-base": sam_model, "openai/clip-vit-base-patch16": clip_model}

    def fake_config(name, **kwargs):
        calls.append(("AutoConfig", name, kwargs))
        return configs[name]

    def fake_model(kind):
        def from_pretrained(name, config=None, output_loading_info=False, **kwargs):
            calls.append((kind, name, {k: v for k, v in kwargs.items() if k != "ignore_mismatched_sizes"}))
            info = {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
            return models[name], info

        return from_pretrained

    monkeypatch.setattr(AutoConfig, "from_pretrained", fake_config)
    monkeypatch.setattr(SamModel, "from_pretrained", fake_model("SamModel"))
    monkeypatch.setattr(CLIPModel, "from_pretrained", fake_model("CLIPModel"))
    model = PosSamModel.from_pretrained_backbones(
        "facebook/sam-vit-base", "openai/clip-vit-base-patch16", config="tiny", sam_kwargs={"revision": "v1"}
    )
    assert calls == [
        ("AutoConfig", "facebook/sam-vit-base", {"revision": "v1"}),
        ("SamModel", "facebook/sam-vit-base", {"revision": "v1"}),
        ("AutoConfig", "openai/clip-vit-base-patch16", {}),
        ("CLIPModel", "openai/clip-vit-base-patch16", {}),
    ]
    assert torch.equal(model.clip.text.text_projection.weight, clip_model.text_projection.weight)


def test_load_failures_name_the_checkpoint(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such SAM checkpoint file or folder"):
        PosSamModel.from_pretrained_backbones(str(tmp_path / "sam-vit-base"), "openai/clip-vit-base-patch16")

    def offline(name, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.")

    monkeypatch.setattr(AutoConfig, "from_pretrained", offline)
    with pytest.raises(OSError, match="cannot load the CLIP checkpoint 'openai/clip-vit-base-patch16': We couldn't"):
        load_clip_backbone("openai/clip-vit-base-patch16")
