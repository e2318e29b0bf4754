"""`PosSamModel.from_pretrained_backbones` and `possam convert build`: original SAM `.pth` + OpenCLIP file -> one
self-contained PosSAM checkpoint that `AutoModel` reloads with identical outputs; configuration and parameter counts."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import make_pixels, make_vocabulary
from conversion_helpers import sam_checkpoint_state_dict, tiny_openclip_model, tiny_sam_image_encoder
from transformers import AutoModel, AutoProcessor

from possam import PosSamConfig, PosSamModel, load_vocabulary, possam_preset
from possam.backbones import load_clip_backbone, load_sam_backbone, parameter_counts, possam_config_for_backbones
from possam.checkpoint_io import CheckpointError
from possam.convert_cli import main as convert_main
from possam.convert_cli import preset_parameter_counts


OUTPUT_KEYS = ("class_queries_logits", "masks_queries_logits", "iou_scores", "clip_logits")


@pytest.fixture(scope="module")
def references():
    return tiny_sam_image_encoder(seed=0), tiny_openclip_model(seed=1)


@pytest.fixture(scope="module")
def checkpoints(references, tmp_path_factory):
    """Checkpoint files as published: Meta's SAM `.pth` and an OpenCLIP training checkpoint (wrapped state dict)."""
    encoder, openclip_model = references
    folder = tmp_path_factory.mktemp("checkpoints")
    sam, clip = folder / "sam_vit_tiny.pth", folder / "epoch_32.pt"
    torch.save(sam_checkpoint_state_dict(encoder), sam)
    torch.save({"epoch": 32, "state_dict": openclip_model.state_dict()}, clip)
    return str(sam), str(clip)


@pytest.fixture(scope="module")
def model(checkpoints):
    torch.manual_seed(0)
    return PosSamModel.from_pretrained_backbones(*checkpoints, config="tiny")


def weight_files(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith((".safetensors", ".bin", ".pt", ".pth")))


def test_towers_hold_the_pretrained_weights_and_are_frozen(model, references):
    encoder, openclip_model = references
    assert not model.training
    pixels = make_pixels(2)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model.sam(pixels).last_hidden_state - encoder(pixels)).abs().max() <= 1e-4
        clip_vision = model.clip.vision
        image_embeddings = clip_vision.embed_regions(clip_vision.dense_features(images).mean(dim=(-2, -1)))
        assert (image_embeddings - openclip_model.encode_image(images)).abs().max() <= 1e-4
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    frozen_parts = ("sam.", "sam_prompt_decoder.", "clip.")
    assert frozen == {name for name, _ in model.named_parameters() if name.startswith(frozen_parts)}
    counts = parameter_counts(model)
    assert counts["sam"] == {"trainable": 0, "frozen": sum(p.numel() for p in encoder.parameters())}
    assert counts["total"]["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0


def test_trainable_parts_are_freshly_initialized_from_the_preset(model):
    reference = PosSamModel(
        possam_preset(
            "tiny",
            sam_vision_config=model.config.sam_vision_config.to_dict(),
            clip_config=model.config.clip_config.to_dict(),
        )
    )
    assert model.config.num_queries == reference.config.num_queries == 10
    # LDP's output projection starts at zero (pure CLIP), as in a model built from the preset directly.
    for name, parameter in reference.ldp.named_parameters():
        assert torch.equal(parameter == 0, dict(model.ldp.named_parameters())[name] == 0), name


def test_save_pretrained_gives_one_self_contained_checkpoint(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert weight_files(tmp_path) == ["model.safetensors"]
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is PosSamModel
    vocabulary, pixels = make_vocabulary(3), make_pixels(2)
    with torch.no_grad():
        expected, actual = model(pixel_values=pixels, **vocabulary), reloaded(pixel_values=pixels, **vocabulary)
    for key in OUTPUT_KEYS:
        assert torch.equal(expected[key], actual[key]), key


def test_cli_build_writes_the_same_model(checkpoints, model, tmp_path, capsys):
    out = tmp_path / "possam-tiny"
    assert (
        convert_main(
            ["build", "--sam", checkpoints[0], "--clip", checkpoints[1], "--preset", "tiny", "--out", str(out)]
        )
        == 0
    )
    assert "untrained PosSAM" in capsys.readouterr().out
    assert weight_files(out) == ["model.safetensors"]
    # Its card names the checkpoints the towers came from; they are files, not Hub ids, so no `base_model`.
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "base_model" not in card and "randomly initialized" not in card
    assert "loaded from the checkpoint `sam_vit_tiny.pth`" in card and "`epoch_32.pt`" in card
    built = AutoModel.from_pretrained(out)
    towers = {k: v for k, v in model.state_dict().items() if k.startswith(("sam.", "sam_prompt_decoder.", "clip."))}
    assert all(torch.equal(built.state_dict()[key], value) for key, value in towers.items())
    # The folder is complete: its processor, and the default (COCO panoptic) vocabulary already embedded.
    processor = AutoProcessor.from_pretrained(out)
    assert processor.image_processor.padded_size == built.config.image_size
    assert built.text_classifier.has_default_vocabulary and len(built.config.vocabulary) == 133
    built.eval()
    pixels = processor(images=[np.zeros((40, 60, 3), dtype=np.uint8)])["pixel_values"]
    without_text = built(pixel_values=pixels)
    with_text = built(pixel_values=pixels, **processor(text=load_vocabulary("coco_panoptic")))
    for key in ("class_queries_logits", "clip_logits"):
        torch.testing.assert_close(without_text[key], with_text[key])


def test_converted_folders_are_backbone_sources_too(checkpoints, model, tmp_path):
    sam_dir, clip_dir = tmp_path / "sam", tmp_path / "clip"
    assert convert_main(["sam", checkpoints[0], "--out", str(sam_dir)]) == 0
    assert convert_main(["openclip", checkpoints[1], "--out", str(clip_dir)]) == 0
    rebuilt = PosSamModel.from_pretrained_backbones(str(sam_dir), str(clip_dir), config="tiny")
    for key, value in model.state_dict().items():
        if key.startswith(("sam.", "sam_prompt_decoder.", "clip.")):
            assert torch.equal(rebuilt.state_dict()[key], value), key


def test_config_takes_towers_from_checkpoints_and_the_rest_from_the_preset_or_overrides(checkpoints):
    sam_config, _, prompt_decoder = load_sam_backbone(checkpoints[0])
    clip_config, _ = load_clip_backbone(checkpoints[1])
    default = possam_config_for_backbones(sam_config, clip_config)
    assert default.num_queries == possam_preset("base").num_queries == 250
    assert default.sam_vision_config.hidden_size == 64 and default.clip_config.projection_dim == 32
    assert default.ldp_hidden_size == 32  # follows the checkpoint's CLIP width, not ConvNeXt-L's 768
    custom = possam_config_for_backbones(
        sam_config, clip_config, possam_preset("tiny"), num_queries=7, clip_config={"input_size": 64}
    )
    assert isinstance(custom, PosSamConfig) and custom.num_queries == 7 and custom.hidden_dim == 32
    assert custom.clip_config.input_size == 64 and custom.clip_config.head_hidden_size == 64
    # SAM's prompt encoder and mask decoder follow the checkpoint (8 heads), not the tiny preset's (2 heads), ...
    with_prompts = possam_config_for_backbones(sam_config, clip_config, possam_preset("tiny"), prompt_decoder)
    assert with_prompts.sam_mask_decoder_config.num_attention_heads == 8
    assert with_prompts.sam_prompt_encoder_config.hidden_size == with_prompts.sam_mask_decoder_config.hidden_size == 32
    # ... and without them (an encoder-only checkpoint), the image encoder's width.
    assert custom.sam_mask_decoder_config.hidden_size == sam_config.output_channels == 32


def test_named_sam_size_must_match_the_checkpoint(checkpoints):
    sam_config, _, _ = load_sam_backbone(checkpoints[0])
    clip_config, _ = load_clip_backbone(checkpoints[1])
    with pytest.raises(ValueError, match="Preset 'large' is PosSAM with SAM ViT-L .*hidden_size 64 and 3 layers"):
        possam_config_for_backbones(sam_config, clip_config, "large")


def test_swapped_checkpoints_fail_with_a_one_line_message(checkpoints, tmp_path, capsys):
    sam, clip = checkpoints
    assert convert_main(["build", "--sam", clip, "--clip", sam, "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "epoch_32.pt" in error and "not a segment-anything checkpoint" in error
    assert (
        convert_main(["build", "--sam", sam, "--clip", str(tmp_path / "missing.bin"), "--out", str(tmp_path / "out")])
        == 1
    )
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "missing.bin: no such checkpoint file" in error
    assert not (tmp_path / "out").exists()


def test_tower_weights_are_loaded_strictly(checkpoints, monkeypatch):
    import possam.backbones as backbones

    convert = backbones.load_clip_backbone

    def lossy(source, **kwargs):  # a tower whose converted weights lost a tensor on the way
        config, state_dict = convert(source, **kwargs)
        del state_dict["vision.head.fc2.weight"]
        return config, state_dict

    monkeypatch.setattr(backbones, "load_clip_backbone", lossy)
    with pytest.raises(CheckpointError, match=r"PosSamModel.clip:\s+missing keys \(1\): vision.head.fc2.weight"):
        PosSamModel.from_pretrained_backbones(*checkpoints, config="tiny")


def test_preset_parameter_counts_on_the_meta_device(capsys):
    counts = {preset: preset_parameter_counts(preset) for preset in ("base", "large", "huge")}
    assert len({counts[preset]["total"]["trainable"] for preset in counts}) == 1  # the decoder does not depend on SAM
    assert counts["base"]["sam"]["frozen"] < counts["large"]["sam"]["frozen"] < counts["huge"]["sam"]["frozen"]
    assert all(
        counts[preset]["sam"]["trainable"] == counts[preset]["clip.vision"]["trainable"] == 0 for preset in counts
    )
    assert counts["base"]["clip.vision"] == counts["huge"]["clip.vision"]
    with torch.device("meta"):
        base = PosSamModel(possam_preset("base"))
    assert counts["base"]["total"]["frozen"] == sum(p.numel() for p in base.parameters() if not p.requires_grad)
    assert convert_main(["params", "--preset", "base"]) == 0
    assert f"{counts['base']['total']['trainable']:,}" in capsys.readouterr().out
