"""OpenCLIP ConvNeXt CLIP -> PosSamClip, checked against OpenCLIP: image, text and mask-pooled region embeddings."""

from __future__ import annotations

import pytest
import torch
from conversion_helpers import import_open_clip, openclip_token_ids, tiny_openclip_model

from possam import possam_preset
from possam.backbones import load_clip_backbone
from possam.checkpoint_io import CheckpointError
from possam.clip_towers import PosSamClip
from possam.convert_cli import main as convert_main
from possam.convert_openclip import convert_openclip_checkpoint, convert_openclip_state_dict
from possam.mask_pooling import mask_pool


TOLERANCE = 1e-4
PROMPTS = ["a photo of a cat.", "There is a large traffic light in the scene.", "sky"]


@pytest.fixture(scope="module")
def openclip_model():
    return tiny_openclip_model(seed=0)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))


def converted_clip(state_dict, **kwargs) -> PosSamClip:
    config, converted = convert_openclip_state_dict(state_dict, **kwargs)
    clip = PosSamClip(config).eval()
    clip.load_state_dict(converted, strict=True)
    return clip


def config_values(config) -> dict:
    return {key: value for key, value in config.to_dict().items() if key != "_name_or_path"}  # where it was loaded from


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return (actual - expected).abs().max().item()


@pytest.mark.parametrize("conv_mlp", [False, True], ids=["linear-mlp", "conv-mlp"])
def test_image_and_region_embeddings_match_open_clip(conv_mlp, images):
    reference = tiny_openclip_model(seed=1, conv_mlp=conv_mlp)
    clip = converted_clip(reference.state_dict())
    with torch.no_grad():
        dense = clip.vision.dense_features(images)
        reference_dense = reference.visual.trunk.forward_features(images)
        assert dense.shape == (2, 64, 4, 4)
        assert max_error(dense, reference_dense) <= TOLERANCE

        # The whole image: global average pool -> trunk head norm -> MLP head, i.e. OpenCLIP's encode_image.
        image_embeddings = clip.vision.embed_regions(dense.mean(dim=(-2, -1)))
        expected = reference.encode_image(images)
        assert expected.abs().mean() > 0.1
        assert max_error(image_embeddings, expected) <= TOLERANCE

        # FC-CLIP's region embedding: stride-32 features mean-pooled over a mask, then OpenCLIP's trunk head (on a
        # 1x1 map) and MLP head.
        masks = (torch.rand(2, 5, 4, 4, generator=torch.Generator().manual_seed(4)) > 0.5).float()
        masks[:, 0] = 1.0
        regions = clip.vision.embed_regions(mask_pool(dense, masks))
        area = masks.sum(dim=(-2, -1), keepdim=True).clamp(min=1.0)
        pooled = torch.einsum("bkhw,bchw->bkc", masks / area, reference_dense)
        expected_regions = reference.visual.head(reference.visual.trunk.head(pooled.reshape(10, 64, 1, 1)))
        assert max_error(regions, expected_regions.reshape(2, 5, 32)) <= TOLERANCE


def test_text_embeddings_match_open_clip(openclip_model):
    clip = converted_clip(openclip_model.state_dict())
    input_ids, attention_mask = openclip_token_ids(PROMPTS)
    # OpenCLIP pools the argmax token, transformers the first end-of-text id: both are the end token here.
    assert (input_ids == 49407).sum().item() == len(PROMPTS) and clip.config.text_config.eos_token_id == 49407
    with torch.no_grad():
        expected = openclip_model.encode_text(input_ids)
        actual = clip.encode_text(input_ids, attention_mask)
    assert expected.abs().mean() > 0.1
    assert max_error(actual, expected) <= TOLERANCE
    assert clip.logit_scale.item() == openclip_model.logit_scale.item()


def test_quick_gelu_text_tower_needs_its_activation():
    reference = tiny_openclip_model(seed=2, quick_gelu=True)
    input_ids, attention_mask = openclip_token_ids(PROMPTS)
    with torch.no_grad():
        expected = reference.encode_text(input_ids)
        matching = converted_clip(reference.state_dict(), text_hidden_act="quick_gelu").encode_text(
            input_ids, attention_mask
        )
        default = converted_clip(reference.state_dict()).encode_text(input_ids, attention_mask)
    assert max_error(matching, expected) <= TOLERANCE
    assert max_error(default, expected) > 1e-3  # the activation is not in the weights: the argument matters


def test_convnext_large_d_320_converts_to_the_default_clip_towers():
    """FC-CLIP's CLIP at full size (built on the meta device: shapes only) fills the PosSAM presets' CLIP exactly."""
    open_clip = import_open_clip()
    with torch.device("meta"):
        reference = open_clip.model.CLIP(**open_clip.get_model_config("convnext_large_d_320"))
    state_dict = dict(reference.state_dict())
    state_dict["logit_scale"] = torch.tensor(4.6052)  # a meta tensor has no value to read
    config, converted = convert_openclip_state_dict(state_dict, "convnext_large_d_320")
    preset = possam_preset("base").clip_config
    with torch.device("meta"):
        expected = PosSamClip(preset).state_dict()
    assert {key: value.shape for key, value in converted.items()} == {
        key: value.shape for key, value in expected.items()
    }
    for tower in ("vision_config", "text_config"):
        ours, theirs = getattr(config, tower).to_dict(), getattr(preset, tower).to_dict()
        assert {key: ours[key] for key in theirs if key != "_name_or_path"} == {
            key: value for key, value in theirs.items() if key != "_name_or_path"
        }, tower
    assert config.logit_scale_init_value == pytest.approx(4.6052)


def test_configuration_is_read_off_the_shapes(openclip_model):
    config, _ = convert_openclip_state_dict(openclip_model.state_dict())
    vision, text = config.vision_config, config.text_config
    assert config.is_convnext and list(vision.depths) == [1, 1, 2, 1] and list(vision.hidden_sizes) == [16, 32, 48, 64]
    assert vision.patch_size == 4 and vision.layer_scale_init_value > 0 and vision.layer_norm_eps == 1e-6
    assert (config.dense_feature_dim, config.head_hidden_size, config.projection_dim) == (64, 64, 32)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size) == (
        64,
        2,
        1,
        256,
    )
    assert (text.max_position_embeddings, text.vocab_size, text.projection_dim, text.hidden_act) == (
        16,
        49408,
        32,
        "gelu",
    )
    assert config.logit_scale_init_value == pytest.approx(openclip_model.logit_scale.item())


@pytest.mark.parametrize("layout", ["bin", "safetensors", "wrapped", "module-prefix", "inside-a-larger-model"])
def test_checkpoint_files_in_every_layout_convert_identically(openclip_model, tmp_path, layout):
    state_dict = openclip_model.state_dict()
    _, expected = convert_openclip_state_dict(state_dict)
    path = tmp_path / ("clip.safetensors" if layout == "safetensors" else "clip.bin")
    if layout == "safetensors":
        from safetensors.torch import save_file

        save_file({key: value.contiguous() for key, value in state_dict.items()}, path)
    elif layout == "wrapped":
        torch.save({"state_dict": state_dict, "epoch": 32}, path)
    elif layout == "module-prefix":
        torch.save({f"module.{key}": value for key, value in state_dict.items()}, path)
    elif layout == "inside-a-larger-model":  # e.g. FC-CLIP: the CLIP under a prefix, next to the segmentation head
        larger = {f"backbone.clip_model.{key}": value for key, value in state_dict.items()}
        larger["sem_seg_head.predictor.class_embed.weight"] = torch.zeros(3, 3)
        torch.save(larger, path)
    else:
        torch.save(state_dict, path)
    _, converted = convert_openclip_checkpoint(path)
    assert sorted(converted) == sorted(expected)
    assert all(torch.equal(converted[key], expected[key]) for key in expected)


def test_incomplete_or_foreign_keys_are_listed(openclip_model):
    state_dict = dict(openclip_model.state_dict())
    del state_dict["ln_final.bias"], state_dict["visual.trunk.stages.2.blocks.1.gamma"]
    state_dict["visual.head.proj.weight"] = torch.zeros(32, 64)
    state_dict["logit_bias"] = torch.zeros(())
    state_dict["transformer.resblocks.1.mlp.c_proj.weight"] = torch.zeros(64, 128)
    with pytest.raises(CheckpointError) as error:
        convert_openclip_state_dict(state_dict, "clip.bin")
    message = str(error.value)
    assert message.startswith("clip.bin does not fit PosSamClip")
    assert "missing keys (2): visual.trunk.stages.2.blocks.1.gamma, ln_final.bias" in message
    assert "unexpected keys (2): logit_bias, visual.head.proj.weight" in message
    text_fc2 = "text.text_model.encoder.layers.1.mlp.fc2.weight"
    assert f"transformer.resblocks.1.mlp.c_proj.weight (64, 128) -> {text_fc2} (64, 256)" in message


def test_a_key_the_configuration_is_read_from_is_named(openclip_model):
    state_dict = dict(openclip_model.state_dict())
    del state_dict["text_projection"]
    with pytest.raises(CheckpointError, match="clip.bin: missing key text_projection, needed to infer"):
        convert_openclip_state_dict(state_dict, "clip.bin")


def test_a_non_convnext_checkpoint_is_refused():
    vit_like = {"visual.conv1.weight": torch.zeros(8, 3, 4, 4), "token_embedding.weight": torch.zeros(10, 8)}
    with pytest.raises(CheckpointError, match="not an OpenCLIP ConvNeXt CLIP \\(an OpenCLIP ViT"):
        convert_openclip_state_dict(vit_like, "vit.bin")


def test_cli_writes_a_folder_that_is_a_clip_source(openclip_model, tmp_path, capsys):
    checkpoint, out = tmp_path / "open_clip_pytorch_model.bin", tmp_path / "clip-tiny"
    torch.save(openclip_model.state_dict(), checkpoint)
    assert convert_main(["openclip", str(checkpoint), "--out", str(out)]) == 0
    assert "PosSAM CLIP towers" in capsys.readouterr().out
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "model.safetensors"]
    expected_config, expected = convert_openclip_checkpoint(checkpoint)
    config, state_dict = load_clip_backbone(str(out))
    assert config_values(config) == config_values(expected_config)
    assert sorted(state_dict) == sorted(expected) and all(torch.equal(state_dict[k], expected[k]) for k in expected)


def test_cli_reports_a_wrong_checkpoint_in_one_line(tmp_path, capsys):
    wrong = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 4, 4, 8)}, wrong)
    assert convert_main(["openclip", str(wrong), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "sam_vit_b.pth" in error and "not an OpenCLIP ConvNeXt CLIP" in error
