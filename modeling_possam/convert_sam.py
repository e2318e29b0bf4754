"""SAM image encoders for PosSAM: Meta's original `.pth` checkpoints and transformers SAM checkpoints.

Meta's segment-anything stores the whole SAM (`image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*`); PosSAM needs
only the image encoder, which maps one-to-one onto transformers' `SamVisionModel`:

    image_encoder.patch_embed.proj.*     -> vision_encoder.patch_embed.projection.*
    image_encoder.pos_embed              -> vision_encoder.pos_embed
    image_encoder.blocks.{i}.norm{1,2}.* -> vision_encoder.layers.{i}.layer_norm{1,2}.*
    image_encoder.blocks.{i}.attn.*      -> vision_encoder.layers.{i}.attn.*   (qkv, proj, rel_pos_h, rel_pos_w)
    image_encoder.blocks.{i}.mlp.*       -> vision_encoder.layers.{i}.mlp.*    (lin1, lin2)
    image_encoder.neck.{0,1,2,3}.*       -> vision_encoder.neck.{conv1,layer_norm1,conv2,layer_norm2}.*

The `.pth` holds no configuration, so the `SamVisionConfig` is read off the tensor shapes: width and patch size from
the patch embedding, input size from the absolute position embedding, depth from the block count, head width from the
relative position tables (which also tell windowed blocks, `2 * window - 1` rows, from global ones, `2 * grid - 1`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from transformers import AutoConfig, SamConfig, SamModel, SamVisionConfig, SamVisionModel

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

# Parts of the original SAM that PosSAM does not use (the promptable decoder and the input normalization buffers).
_SAM_IGNORED = re.compile(r"(prompt_encoder\.|mask_decoder\.|pixel_mean$|pixel_std$)")

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


def convert_sam_checkpoint(
    path: str | os.PathLike, **config_overrides
) -> tuple[SamVisionConfig, dict[str, torch.Tensor]]:
    """Reads an original segment-anything checkpoint (`sam_vit_b_01ec64.pth`, ...) with `torch.load(weights_only=True)`
    and converts it with `convert_sam_state_dict`."""
    return convert_sam_state_dict(read_state_dict(path), os.fspath(path), **config_overrides)


def load_transformers_sam(
    name_or_path: str, **from_pretrained_kwargs
) -> tuple[SamVisionConfig, dict[str, torch.Tensor]]:
    """Loads the image encoder of a transformers SAM checkpoint (Hub id such as `facebook/sam-vit-base`, or a local
    folder of a `SamModel` or `SamVisionModel`) through `from_pretrained`.

    Returns:
        The `SamVisionConfig` and a `SamVisionModel` state dict (`vision_encoder.*`).

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
    # Only the image encoder matters: a SamModel's prompt encoder and mask decoder are not used.
    check_loading_info(info, name_or_path, "transformers SamVisionModel", prefix="vision_encoder.")
    return vision_config, {f"vision_encoder.{key}": value for key, value in model.vision_encoder.state_dict().items()}
