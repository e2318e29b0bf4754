"""SAM for PosSAM: Meta's original `.pth` checkpoints and transformers SAM checkpoints.

Meta's segment-anything stores the whole SAM (`image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*`). The image
encoder maps one-to-one onto transformers' `SamVisionModel`:

    image_encoder.patch_embed.proj.*     -> vision_encoder.patch_embed.projection.*
    image_encoder.pos_embed              -> vision_encoder.pos_embed
    image_encoder.blocks.{i}.norm{1,2}.* -> vision_encoder.layers.{i}.layer_norm{1,2}.*
    image_encoder.blocks.{i}.attn.*      -> vision_encoder.layers.{i}.attn.*   (qkv, proj, rel_pos_h, rel_pos_w)
    image_encoder.blocks.{i}.mlp.*       -> vision_encoder.layers.{i}.mlp.*    (lin1, lin2)
    image_encoder.neck.{0,1,2,3}.*       -> vision_encoder.neck.{conv1,layer_norm1,conv2,layer_norm2}.*

The `.pth` holds no configuration, so the `SamVisionConfig` is read off the tensor shapes: width and patch size from
the patch embedding, input size from the absolute position embedding, depth from the block count, head width from the
relative position tables (which also tell windowed blocks, `2 * window - 1` rows, from global ones, `2 * grid - 1`).

The prompt encoder and mask decoder (PosSAM's frozen `sam_prompt_decoder`, for `segment_prompts`) map onto
transformers' `SamPromptEncoder` / `SamMaskDecoder` (`SAM_PROMPT_DECODER_RULES`): `point_embeddings` -> `point_embed`,
`pe_layer.positional_encoding_gaussian_matrix` -> `shared_embedding.positional_embedding`, the `Sequential` layers of
`mask_downscaling` / `output_upscaling` -> named convolutions and norms, `normN` -> `layer_normN`, and each 3-layer MLP
`layers.{0,1,2}` -> `proj_in`, `layers.0`, `proj_out`. Their configuration is read off the shapes too, except the
mask decoder's head count, which no tensor records (SAM's 8 unless overridden).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import NamedTuple

import torch
from transformers import (
    AutoConfig,
    SamConfig,
    SamMaskDecoderConfig,
    SamModel,
    SamPromptEncoderConfig,
    SamVisionConfig,
    SamVisionModel,
)
from transformers.models.sam.modeling_sam import SamMaskDecoder, SamPromptEncoder

from .checkpoint_io import (
    CheckpointError,
    check_loading_info,
    convert_state_dict,
    expected_shapes,
    read_state_dict,
    rule,
)


SAM_RULES = (
    rule("image_encoder.patch_embed.proj.{p}", "vision_encoder.patch_embed.projection.{p}"),
    rule("image_encoder.pos_embed", "vision_encoder.pos_embed"),
    rule("image_encoder.blocks.{i}.norm1.{p}", "vision_encoder.layers.{i}.layer_norm1.{p}"),
    rule("image_encoder.blocks.{i}.norm2.{p}", "vision_encoder.layers.{i}.layer_norm2.{p}"),
    rule("image_encoder.blocks.{i}.attn.{tail}", "vision_encoder.layers.{i}.attn.{tail}"),
    rule("image_encoder.blocks.{i}.mlp.{tail}", "vision_encoder.layers.{i}.mlp.{tail}"),
    rule("image_encoder.neck.0.{p}", "vision_encoder.neck.conv1.{p}"),
    rule("image_encoder.neck.1.{p}", "vision_encoder.neck.layer_norm1.{p}"),
    rule("image_encoder.neck.2.{p}", "vision_encoder.neck.conv2.{p}"),
    rule("image_encoder.neck.3.{p}", "vision_encoder.neck.layer_norm2.{p}"),
)

# Meta's prompt encoder + mask decoder -> PosSamPromptDecoder (transformers' SamPromptEncoder / SamMaskDecoder names).
# The first matching rule applies, so the specific renames come before the generic `{tail}` ones.
_MLP_RULES = tuple(
    rule(f"mask_decoder.{mlp}.layers.{source}.{{p}}", f"mask_decoder.{mlp}.{target}.{{p}}")
    for mlp in ("output_hypernetworks_mlps.{i}", "iou_prediction_head")
    for source, target in (("0", "proj_in"), ("1", "layers.0"), ("2", "proj_out"))
)
SAM_PROMPT_DECODER_RULES = (
    rule("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", "prompt_encoder.shared_embedding.positional_embedding"),
    rule("prompt_encoder.point_embeddings.{i}.weight", "prompt_encoder.point_embed.{i}.weight"),
    rule("prompt_encoder.not_a_point_embed.weight"),
    rule("prompt_encoder.no_mask_embed.weight"),
    rule("prompt_encoder.mask_downscaling.0.{p}", "prompt_encoder.mask_embed.conv1.{p}"),
    rule("prompt_encoder.mask_downscaling.1.{p}", "prompt_encoder.mask_embed.layer_norm1.{p}"),
    rule("prompt_encoder.mask_downscaling.3.{p}", "prompt_encoder.mask_embed.conv2.{p}"),
    rule("prompt_encoder.mask_downscaling.4.{p}", "prompt_encoder.mask_embed.layer_norm2.{p}"),
    rule("prompt_encoder.mask_downscaling.6.{p}", "prompt_encoder.mask_embed.conv3.{p}"),
    *(
        rule(f"mask_decoder.transformer.layers.{{i}}.norm{n}.{{p}}", f"mask_decoder.transformer.layers.{{i}}.layer_norm{n}.{{p}}")
        for n in (1, 2, 3, 4)
    ),
    rule("mask_decoder.transformer.layers.{i}.{tail}"),
    rule("mask_decoder.transformer.norm_final_attn.{p}", "mask_decoder.transformer.layer_norm_final_attn.{p}"),
    rule("mask_decoder.transformer.final_attn_token_to_image.{tail}"),
    rule("mask_decoder.iou_token.weight"),
    rule("mask_decoder.mask_tokens.weight"),
    rule("mask_decoder.output_upscaling.0.{p}", "mask_decoder.upscale_conv1.{p}"),
    rule("mask_decoder.output_upscaling.1.{p}", "mask_decoder.upscale_layer_norm.{p}"),
    rule("mask_decoder.output_upscaling.3.{p}", "mask_decoder.upscale_conv2.{p}"),
    *_MLP_RULES,
)

# Parts of the original SAM that the image encoder conversion leaves to others (the promptable decoder, converted by
# `convert_sam_prompt_decoder_state_dict`) or that PosSAM does not use (the input normalization buffers).
_SAM_IGNORED = re.compile(r"(prompt_encoder\.|mask_decoder\.|pixel_mean$|pixel_std$)")
_PROMPT_DECODER_IGNORED = re.compile(r"(image_encoder\.|pixel_mean$|pixel_std$)")


class SamPromptDecoderWeights(NamedTuple):
    """SAM's prompt encoder and mask decoder: their configurations and a `PosSamPromptDecoder` state dict."""

    prompt_encoder_config: SamPromptEncoderConfig
    mask_decoder_config: SamMaskDecoderConfig
    state_dict: dict[str, torch.Tensor]


class SamWeights(NamedTuple):
    """A SAM checkpoint as PosSAM uses it: the image encoder (`SamVisionModel` state dict) and, when the checkpoint
    holds them, the prompt encoder and mask decoder (`None` for an encoder-only checkpoint)."""

    vision_config: SamVisionConfig
    vision_state_dict: dict[str, torch.Tensor]
    prompt_decoder: SamPromptDecoderWeights | None

# Heads of the public SAM encoders, for checkpoints without relative position tables to read the head width from.
_KNOWN_HEADS = {768: 12, 1024: 16, 1280: 16}


def sam_vision_config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], source_name: str = "SAM checkpoint", **overrides
) -> SamVisionConfig:
    """Infers the `SamVisionConfig` of an original SAM image encoder from its tensor shapes.

    Args:
        state_dict: segment-anything keys (`image_encoder.*`).
        source_name: names the checkpoint in errors.
        overrides: `SamVisionConfig` fields to set instead of inferring them (needed only for encoders without relative
            position tables, whose window size and global blocks cannot be read off the weights).
    """
    prefix = "image_encoder."

    def tensor(name: str) -> torch.Tensor:
        if prefix + name not in state_dict:
            raise CheckpointError(f"{source_name}: missing key {prefix + name}, needed to infer the SAM configuration.")
        return state_dict[prefix + name]

    if not any(key.startswith(prefix) for key in state_dict):
        hint = (
            " It looks like a transformers SAM checkpoint: pass its folder (config.json + weights) instead."
            if any(key.startswith("vision_encoder.") for key in state_dict)
            else ""
        )
        raise CheckpointError(
            f"{source_name}: not a segment-anything checkpoint, no 'image_encoder.*' keys (found e.g. "
            f"{', '.join(list(state_dict)[:3])}).{hint}"
        )
    hidden_size, num_channels, patch_size, _ = tensor("patch_embed.proj.weight").shape
    block_ids = sorted(
        {int(m.group(1)) for key in state_dict if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", key))}
    )
    if not block_ids or block_ids != list(range(len(block_ids))):
        raise CheckpointError(
            f"{source_name}: image encoder blocks are missing or not numbered 0..N-1 (found {block_ids})."
        )
    use_abs_pos = prefix + "pos_embed" in state_dict
    use_rel_pos = prefix + "blocks.0.attn.rel_pos_h" in state_dict
    config = {
        "hidden_size": hidden_size,
        "num_channels": num_channels,
        "patch_size": patch_size,
        "num_hidden_layers": len(block_ids),
        "mlp_dim": tensor("blocks.0.mlp.lin1.weight").shape[0],
        "output_channels": tensor("neck.0.weight").shape[0],
        # SAM's positional encoding of prompts and of the embedding grid has half the neck's channels per sin/cos.
        "num_pos_feats": tensor("neck.0.weight").shape[0] // 2,
        "qkv_bias": prefix + "blocks.0.attn.qkv.bias" in state_dict,
        "use_abs_pos": use_abs_pos,
        "use_rel_pos": use_rel_pos,
    }
    if use_abs_pos:
        config["image_size"] = tensor("pos_embed").shape[1] * patch_size
    if use_rel_pos:
        head_dim = tensor("blocks.0.attn.rel_pos_h").shape[1]
        config["num_attention_heads"] = hidden_size // head_dim
        grid = overrides.get("image_size", config.get("image_size", 1024)) // patch_size
        # A block attends within windows of side w (2w - 1 relative positions) or globally (2 * grid - 1).
        spans = {index: (tensor(f"blocks.{index}.attn.rel_pos_h").shape[0] + 1) // 2 for index in block_ids}
        windows = {span for span in spans.values() if span != grid}
        if len(windows) > 1:
            raise CheckpointError(
                f"{source_name}: blocks use different window sizes {sorted(windows)}; SamVisionConfig has one."
            )
        config["global_attn_indexes"] = [index for index, span in spans.items() if span == grid]
        config["window_size"] = windows.pop() if windows else 0
    else:
        config["num_attention_heads"] = _KNOWN_HEADS.get(hidden_size, max(hidden_size // 64, 1))
        missing = [name for name in ("window_size", "global_attn_indexes") if name not in overrides]
        if missing:
            raise CheckpointError(
                f"{source_name}: the encoder has no relative position tables, so {' and '.join(missing)} cannot be "
                "read off its weights; pass them explicitly."
            )
    config.update(overrides)
    return SamVisionConfig(**config)


def convert_sam_state_dict(
    state_dict: Mapping[str, torch.Tensor], source_name: str = "SAM checkpoint", **config_overrides
) -> tuple[SamVisionConfig, dict[str, torch.Tensor]]:
    """Original SAM keys -> (`SamVisionConfig`, state dict of transformers' `SamVisionModel`).

    Prompt encoder, mask decoder and normalization buffers are ignored; any other key that does not fit is an error.

    Raises:
        CheckpointError: listing missing, unexpected and mis-shaped image encoder keys.
    """
    config = sam_vision_config_from_state_dict(state_dict, source_name, **config_overrides)
    with torch.device("meta"):
        expected = expected_shapes(SamVisionModel(config))
    converted = convert_state_dict(
        state_dict,
        SAM_RULES,
        expected,
        source_name,
        "transformers SamVisionModel",
        ignore=lambda key: _SAM_IGNORED.match(key) is not None,
    )
    return config, converted


def sam_prompt_decoder_configs_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    vision_config: SamVisionConfig,
    source_name: str = "SAM checkpoint",
    num_attention_heads: int = 8,
) -> tuple[SamPromptEncoderConfig, SamMaskDecoderConfig]:
    """Infers the prompt encoder and mask decoder configurations of an original SAM from its tensor shapes.

    Args:
        vision_config: the image encoder's configuration (input size and patch size of the prompt frame).
        num_attention_heads: the mask decoder's heads, which no tensor records (8 in every public SAM).
    """

    def tensor(name: str) -> torch.Tensor:
        if name not in state_dict:
            raise CheckpointError(f"{source_name}: missing key {name}, needed to infer the SAM mask decoder configuration.")
        return state_dict[name]

    def count(pattern: str) -> int:
        return len({m.group(1) for key in state_dict if (m := re.fullmatch(pattern, key))})

    hidden_size = tensor("mask_decoder.iou_token.weight").shape[1]
    prompt_encoder = SamPromptEncoderConfig(
        hidden_size=hidden_size,
        image_size=vision_config.image_size,
        patch_size=vision_config.patch_size,
        mask_input_channels=tensor("prompt_encoder.mask_downscaling.3.weight").shape[0],
        num_point_embeddings=count(r"prompt_encoder\.point_embeddings\.(\d+)\.weight"),
    )
    mask_decoder = SamMaskDecoderConfig(
        hidden_size=hidden_size,
        mlp_dim=tensor("mask_decoder.transformer.layers.0.mlp.lin1.weight").shape[0],
        num_hidden_layers=count(r"mask_decoder\.transformer\.layers\.(\d+)\..*"),
        num_attention_heads=num_attention_heads,
        attention_downsample_rate=hidden_size
        // tensor("mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight").shape[0],
        num_multimask_outputs=tensor("mask_decoder.mask_tokens.weight").shape[0] - 1,
        iou_head_depth=count(r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.weight"),
        iou_head_hidden_dim=tensor("mask_decoder.iou_prediction_head.layers.0.weight").shape[0],
    )
    return prompt_encoder, mask_decoder


def convert_sam_prompt_decoder_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    vision_config: SamVisionConfig,
    source_name: str = "SAM checkpoint",
    num_attention_heads: int = 8,
) -> SamPromptDecoderWeights | None:
    """Original SAM keys -> SAM's prompt encoder and mask decoder for PosSAM (`None` if the checkpoint has neither).

    Raises:
        CheckpointError: listing missing, unexpected and mis-shaped prompt encoder / mask decoder keys.
    """
    if not any(key.startswith(("prompt_encoder.", "mask_decoder.")) for key in state_dict):
        return None
    prompt_config, decoder_config = sam_prompt_decoder_configs_from_state_dict(
        state_dict, vision_config, source_name, num_attention_heads
    )
    sam_config = SamConfig(
        vision_config=vision_config.to_dict(),
        prompt_encoder_config=prompt_config.to_dict(),
        mask_decoder_config=decoder_config.to_dict(),
    )
    with torch.device("meta"):
        expected = {
            **{f"prompt_encoder.{k}": v for k, v in expected_shapes(SamPromptEncoder(sam_config)).items()},
            **{f"mask_decoder.{k}": v for k, v in expected_shapes(SamMaskDecoder(sam_config.mask_decoder_config)).items()},
        }
    converted = convert_state_dict(
        state_dict,
        SAM_PROMPT_DECODER_RULES,
        expected,
        source_name,
        "SAM prompt encoder and mask decoder",
        ignore=lambda key: _PROMPT_DECODER_IGNORED.match(key) is not None,
    )
    return SamPromptDecoderWeights(prompt_config, decoder_config, converted)


def convert_sam_checkpoint(path: str | os.PathLike, **config_overrides) -> SamWeights:
    """Reads an original segment-anything checkpoint (`sam_vit_b_01ec64.pth`, ...) with `torch.load(weights_only=True)`
    and converts its image encoder (`convert_sam_state_dict`, `config_overrides` are `SamVisionConfig` fields) and its
    prompt encoder + mask decoder (`convert_sam_prompt_decoder_state_dict`)."""
    state_dict = read_state_dict(path)
    config, vision_state_dict = convert_sam_state_dict(state_dict, os.fspath(path), **config_overrides)
    return SamWeights(config, vision_state_dict, convert_sam_prompt_decoder_state_dict(state_dict, config, os.fspath(path)))


def load_transformers_sam(name_or_path: str, **from_pretrained_kwargs) -> SamWeights:
    """Loads a transformers SAM checkpoint (Hub id such as `facebook/sam-vit-base`, or a local folder of a `SamModel`
    or `SamVisionModel`) through `from_pretrained`.

    Returns:
        The image encoder (`SamVisionConfig`, `SamVisionModel` state dict with `vision_encoder.*` keys) and, for a
        `SamModel`, its prompt encoder and mask decoder.

    Raises:
        CheckpointError: the checkpoint is not a SAM, or its image encoder weights are incomplete or mis-shaped.
    """
    config = AutoConfig.from_pretrained(name_or_path, **from_pretrained_kwargs)
    if isinstance(config, SamConfig):
        model_class, vision_config = SamModel, config.vision_config
    elif isinstance(config, SamVisionConfig):
        model_class, vision_config = SamVisionModel, config
    else:
        raise CheckpointError(
            f"{name_or_path}: expected a transformers SAM checkpoint (model_type 'sam' or 'sam_vision_model'), got "
            f"model_type {config.model_type!r}."
        )
    # Mismatched shapes are collected (not raised by transformers) so the error below lists them with the rest.
    model, info = model_class.from_pretrained(
        name_or_path,
        config=config,
        output_loading_info=True,
        **{**from_pretrained_kwargs, "ignore_mismatched_sizes": True},
    )
    check_loading_info(info, name_or_path, "transformers SamVisionModel", prefix="vision_encoder.")
    vision_state_dict = {f"vision_encoder.{key}": value for key, value in model.vision_encoder.state_dict().items()}
    if model_class is SamVisionModel:
        return SamWeights(vision_config, vision_state_dict, None)
    for prefix in ("shared_image_embedding.", "prompt_encoder.", "mask_decoder."):
        check_loading_info(info, name_or_path, "transformers SamModel", prefix=prefix)
    prompt_state_dict = {
        f"{part}.{key}": value
        for part in ("prompt_encoder", "mask_decoder")
        for key, value in getattr(model, part).state_dict().items()
    }
    prompt_decoder = SamPromptDecoderWeights(config.prompt_encoder_config, config.mask_decoder_config, prompt_state_dict)
    return SamWeights(vision_config, vision_state_dict, prompt_decoder)
