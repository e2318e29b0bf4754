"""SAM image encoders for PosSAM: Meta's `.pth` checked against Meta's segment-anything; transformers checkpoints."""

from __future__ import annotations

import pytest
import torch
from conversion_helpers import (
    SAM_ENCODER_KWARGS,
    import_segment_anything,
    sam_checkpoint_state_dict,
    tiny_sam_image_encoder,
    tiny_transformers_sam,
)
from transformers import CLIPTextConfig, CLIPTextModel, SamModel, SamVisionModel

from possam import possam_preset
from possam.backbones import load_sam_backbone
from possam.checkpoint_io import CheckpointError
from possam.convert_cli import main as convert_main
from possam.convert_sam import convert_sam_checkpoint, convert_sam_state_dict, load_transformers_sam


TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def encoder():
    return tiny_sam_image_encoder(seed=0)


@pytest.fixture(scope="module")
def pixels():
    size = SAM_ENCODER_KWARGS["img_size"]
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def sam_pth(encoder, tmp_path):
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(sam_checkpoint_state_dict(encoder), path)
    return path


def load_converted(config, state_dict, attn_implementation="sdpa") -> SamVisionModel:
    model = SamVisionModel._from_config(config, attn_implementation=attn_implementation).eval()
    model.load_state_dict(state_dict, strict=True)
    return model


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_original_checkpoint_matches_segment_anything(encoder, pixels, sam_pth, attn_implementation):
    config, state_dict, _ = convert_sam_checkpoint(sam_pth)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 3, 2)
    assert (config.image_size, config.patch_size, config.output_channels, config.mlp_dim) == (128, 16, 32, 256)
    assert (config.window_size, list(config.global_attn_indexes)) == (3, [1])
    assert config.use_abs_pos and config.use_rel_pos and config.qkv_bias
    # The image encoder's tensors only: the prompt encoder and mask decoder come separately, pixel mean/std are dropped.
    assert all(key.startswith("vision_encoder.") for key in state_dict)
    assert len(state_dict) == len(encoder.state_dict())

    model = load_converted(config, state_dict, attn_implementation)
    with torch.no_grad():
        expected = encoder(pixels)
        actual = model(pixel_values=pixels).last_hidden_state
    assert actual.shape == expected.shape == (2, 32, 8, 8)
    assert expected.abs().mean() > 0.1  # random weights of real scale: a wrong mapping cannot hide
    assert (actual - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("preset", ["base", "large", "huge"])
def test_public_sam_layouts_convert_to_the_preset_encoders(preset):
    """Meta's full-size ViT-B/L/H (built on the meta device: shapes only) give exactly the presets' SAM encoders."""
    build_sam = import_segment_anything("build_sam")
    with torch.device("meta"):
        sam = {
            "base": build_sam.build_sam_vit_b,
            "large": build_sam.build_sam_vit_l,
            "huge": build_sam.build_sam_vit_h,
        }[preset]()
    config, state_dict = convert_sam_state_dict(sam.state_dict(), f"sam_vit_{preset[0]}.pth")
    preset_config = possam_preset(preset).sam_vision_config
    fields = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "mlp_dim",
        "output_channels",
        "image_size",
        "patch_size",
        "window_size",
        "global_attn_indexes",
        "use_abs_pos",
        "use_rel_pos",
        "qkv_bias",
    )
    assert {name: getattr(config, name) for name in fields} == {name: getattr(preset_config, name) for name in fields}
    with torch.device("meta"):
        expected = SamVisionModel(preset_config).state_dict()
    assert {key: value.shape for key, value in state_dict.items()} == {
        key: value.shape for key, value in expected.items()
    }


def test_unknown_keys_inside_or_outside_the_encoder_are_errors(encoder):
    state_dict = sam_checkpoint_state_dict(encoder)
    state_dict["image_encoder.blocks.0.attn.scale"] = torch.ones(1)
    state_dict["adapter.weight"] = torch.ones(1)
    with pytest.raises(CheckpointError) as error:
        convert_sam_state_dict(state_dict, "sam.pth")
    message = str(error.value)
    assert "sam.pth" in message and "unexpected keys (2)" in message
    assert "image_encoder.blocks.0.attn.scale" in message and "adapter.weight" in message


def test_truncated_checkpoint_lists_missing_keys_in_checkpoint_names(encoder):
    state_dict = sam_checkpoint_state_dict(encoder)
    del state_dict["image_encoder.blocks.2.mlp.lin2.weight"], state_dict["image_encoder.neck.3.bias"]
    with pytest.raises(CheckpointError) as error:
        convert_sam_state_dict(state_dict, "sam.pth")
    message = str(error.value)
    assert "missing keys (2)" in message
    assert "image_encoder.blocks.2.mlp.lin2.weight" in message and "image_encoder.neck.3.bias" in message


def test_shape_mismatch_is_listed(encoder):
    state_dict = sam_checkpoint_state_dict(encoder)
    state_dict["image_encoder.blocks.1.mlp.lin2.weight"] = torch.zeros(64, 100)
    with pytest.raises(
        CheckpointError, match=r"shape mismatches.*image_encoder\.blocks\.1\.mlp\.lin2\.weight \(64, 100\)"
    ):
        convert_sam_state_dict(state_dict)


def test_wrong_or_unreadable_files_are_named(encoder, tmp_path):
    transformers_layout = {f"vision_encoder.{key}": value for key, value in encoder.state_dict().items()}
    with pytest.raises(CheckpointError, match="no 'image_encoder.\\*' keys.*pass its folder"):
        convert_sam_state_dict(transformers_layout, "model.bin")
    truncated = tmp_path / "truncated.pth"
    torch.save(sam_checkpoint_state_dict(encoder), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"truncated\.pth: cannot be read as a checkpoint"):
        convert_sam_checkpoint(truncated)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        convert_sam_checkpoint(tmp_path / "missing.pth")


def test_cli_writes_a_transformers_folder_that_loads_back(encoder, pixels, sam_pth, tmp_path, capsys):
    out = tmp_path / "sam-tiny"
    assert convert_main(["sam", str(sam_pth), "--out", str(out)]) == 0
    assert "SamModel" in capsys.readouterr().out
    model = SamModel.from_pretrained(out).eval()
    with torch.no_grad():
        assert (model.get_image_embeddings(pixels) - encoder(pixels)).abs().max() <= TOLERANCE
    # The folder is itself a SAM source for PosSAM (a transformers SamModel checkpoint), prompt decoder included.
    config, state_dict, prompt_decoder = load_sam_backbone(out)
    assert config.window_size == 3 and torch.equal(state_dict["vision_encoder.pos_embed"], encoder.pos_embed)
    meta = torch.load(sam_pth, weights_only=True)
    assert torch.equal(
        prompt_decoder.state_dict["prompt_encoder.shared_embedding.positional_embedding"],
        meta["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
    )
    assert prompt_decoder.mask_decoder_config.num_attention_heads == 8


def test_cli_fails_with_one_line_naming_the_file(tmp_path, capsys):
    assert convert_main(["sam", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "nope.pth" in error and "no such checkpoint file" in error
    wrong = tmp_path / "clip.pt"
    torch.save({"token_embedding.weight": torch.zeros(3, 2)}, wrong)
    assert convert_main(["sam", str(wrong), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "clip.pt" in error and "image_encoder" in error


def test_transformers_sam_folder_gives_its_vision_encoder(tmp_path):
    sam = tiny_transformers_sam()
    sam.save_pretrained(tmp_path)
    config, state_dict, prompt_decoder = load_transformers_sam(str(tmp_path))
    assert config.to_dict() == sam.config.vision_config.to_dict()
    expected = sam.vision_encoder.state_dict()
    assert sorted(state_dict) == sorted(f"vision_encoder.{key}" for key in expected)
    assert all(torch.equal(state_dict[f"vision_encoder.{key}"], value) for key, value in expected.items())
    # ... and its prompt encoder and mask decoder, under PosSamModel.sam_prompt_decoder's names.
    assert prompt_decoder.mask_decoder_config.to_dict() == sam.config.mask_decoder_config.to_dict()
    expected = {f"{part}.{key}": value for part in ("prompt_encoder", "mask_decoder")
                for key, value in getattr(sam, part).state_dict().items()}
    assert sorted(prompt_decoder.state_dict) == sorted(expected)
    assert all(torch.equal(prompt_decoder.state_dict[key], value) for key, value in expected.items())


def test_transformers_checkpoint_of_another_model_is_refused(tmp_path):
    text_config = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    CLIPTextModel(text_config).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="expected a transformers SAM checkpoint.*'clip_text_model'"):
        load_sam_backbone(str(tmp_path))


def test_incomplete_transformers_sam_lists_missing_and_mismatched_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_transformers_sam().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["vision_encoder.layers.1.mlp.lin1.weight"]
    weights["vision_encoder.neck.conv1.weight"] = torch.zeros(32, 48, 1, 1)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as error:
        load_transformers_sam(str(tmp_path))
    message = str(error.value)
    assert "vision_encoder.layers.1.mlp.lin1.weight" in message
    assert "vision_encoder.neck.conv1.weight (32, 48, 1, 1) -> (32, 32, 1, 1)" in message
