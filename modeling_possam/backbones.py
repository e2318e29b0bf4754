"""Building PosSAM from pretrained SAM and CLIP checkpoints (`PosSamModel.from_pretrained_backbones`).

A PosSAM model is two frozen pretrained towers plus a freshly initialized mask decoder, IoU head and LDP. This module
loads the towers from whatever form they are published in, takes their configurations from the checkpoints, and
fills a new `PosSamModel` with them:

- SAM: a transformers checkpoint (Hub id such as `facebook/sam-vit-base`, or a local folder of `SamModel` /
  `SamVisionModel`), or Meta's original `.pth` (`sam_vit_b_01ec64.pth`). The image encoder and, when the checkpoint
  has them (`SamModel`, Meta's `.pth`), SAM's prompt encoder and mask decoder (for `segment_prompts`).
- CLIP: a transformers `CLIPModel` (Hub id such as `openai/clip-vit-base-patch16`, or a local folder), a folder
  written by `possam convert openclip` (a `PosSamClipConfig` + weights), or an OpenCLIP ConvNeXt checkpoint file
  (FC-CLIP's `convnext_large_d_320`).

Hub ids and folders always go through transformers' `from_pretrained` / `cached_file`, so caching, revisions and
tokens work as usual; a string naming a checkpoint file (by suffix) is read directly.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections import OrderedDict
from collections.abc import Mapping

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, CLIPConfig, CLIPModel, PreTrainedConfig, SamVisionConfig
from transformers.utils import SAFE_WEIGHTS_NAME, cached_file, logging

from .checkpoint_io import (
    CheckpointError,
    check_loading_info,
    convert_state_dict,
    expected_shapes,
    is_checkpoint_file,
    load_checked,
    looks_like_local_path,
    read_state_dict,
    rule,
)
from .clip_towers import PosSamClip
from .configuration import PosSamClipConfig, PosSamConfig, possam_preset
from .configuration.presets import SAM_VISION_SIZES
from .convert_openclip import convert_openclip_checkpoint
from .convert_sam import SamPromptDecoderWeights, SamWeights, convert_sam_checkpoint, load_transformers_sam


logger = logging.get_logger(__name__)


TRANSFORMERS_CLIP_RULES = (
    rule("vision_model.{tail}", "vision.model.vision_model.{tail}"),
    rule("visual_projection.weight", "vision.model.visual_projection.weight"),
    rule("text_model.{tail}", "text.text_model.{tail}"),
    rule("text_projection.weight", "text.text_projection.weight"),
    rule("logit_scale"),
)


# ---------------------------------------------------------------------------------------------------- CLIP sources


def convert_transformers_clip(
    model: CLIPModel, source_name: str = "CLIPModel"
) -> tuple[PosSamClipConfig, dict[str, torch.Tensor]]:
    """A transformers ViT `CLIPModel` -> (`PosSamClipConfig` with its `CLIPVisionConfig`, `PosSamClip` state dict).

    The vision tower becomes `vision.model` (a `CLIPVisionModelWithProjection`: `vision_model` + `visual_projection`),
    the text tower `text` (`CLIPTextModelWithProjection`), and CLIP's logit scale is kept.
    """
    config = model.config
    # CLIPModel sizes both projections from its own `projection_dim`; the sub-configs may carry a stale default.
    vision_config, text_config = copy.deepcopy(config.vision_config), copy.deepcopy(config.text_config)
    vision_config.projection_dim = text_config.projection_dim = config.projection_dim
    clip_config = PosSamClipConfig(
        vision_config=vision_config,
        text_config=text_config,
        projection_dim=config.projection_dim,
        logit_scale_init_value=float(model.logit_scale.detach()),
    )
    with torch.device("meta"):
        expected = expected_shapes(PosSamClip(clip_config))
    converted = convert_state_dict(
        model.state_dict(), TRANSFORMERS_CLIP_RULES, expected, source_name, "PosSamClip (ViT CLIP towers)"
    )
    return clip_config, converted


def load_transformers_clip(
    name_or_path: str, config: CLIPConfig | None = None, **from_pretrained_kwargs
) -> tuple[PosSamClipConfig, dict[str, torch.Tensor]]:
    """Loads a transformers `CLIPModel` (Hub id or local folder) with `from_pretrained` and converts it.

    Raises:
        CheckpointError: the checkpoint is not a `CLIPModel`, or its weights are incomplete or mis-shaped.
    """
    config = config if config is not None else AutoConfig.from_pretrained(name_or_path, **from_pretrained_kwargs)
    if not isinstance(config, CLIPConfig):
        raise CheckpointError(
            f"{name_or_path}: expected a transformers CLIPModel checkpoint (model_type 'clip'), got model_type "
            f"{config.model_type!r}."
        )
    model, info = CLIPModel.from_pretrained(
        name_or_path,
        config=config,
        output_loading_info=True,
        **{**from_pretrained_kwargs, "ignore_mismatched_sizes": True},
    )
    check_loading_info(info, name_or_path, "transformers CLIPModel")
    return convert_transformers_clip(model, name_or_path)


def save_possam_clip(
    config: PosSamClipConfig, state_dict: Mapping[str, torch.Tensor], save_directory: str | os.PathLike
) -> None:
    """Writes converted CLIP towers as a folder: `config.json` (`PosSamClipConfig`) + `model.safetensors`."""
    os.makedirs(save_directory, exist_ok=True)
    config.save_pretrained(save_directory)
    tensors = {key: value.detach().contiguous() for key, value in state_dict.items()}
    save_file(tensors, os.path.join(save_directory, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})


def load_possam_clip(
    name_or_path: str, config: PosSamClipConfig | None = None, **from_pretrained_kwargs
) -> tuple[PosSamClipConfig, dict[str, torch.Tensor]]:
    """Loads CLIP towers saved by `save_possam_clip` / `possam convert openclip` (Hub id or local folder)."""
    config = config if config is not None else PosSamClipConfig.from_pretrained(name_or_path, **from_pretrained_kwargs)
    weights = cached_file(name_or_path, SAFE_WEIGHTS_NAME, **from_pretrained_kwargs)
    with torch.device("meta"):
        expected = expected_shapes(PosSamClip(config))
    state_dict = convert_state_dict(read_state_dict(weights), [rule("{tail}")], expected, name_or_path, "PosSamClip")
    return config, state_dict


def load_clip_backbone(source: str | os.PathLike, **kwargs) -> tuple[PosSamClipConfig, dict[str, torch.Tensor]]:
    """CLIP towers from any supported source -> (`PosSamClipConfig`, `PosSamClip` state dict).

    Args:
        source: an OpenCLIP ConvNeXt checkpoint file, or a Hub id / local folder of a transformers `CLIPModel` or of
            converted PosSAM CLIP towers.
        kwargs: `text_head_dim` / `text_hidden_act` for an OpenCLIP file; `from_pretrained` arguments (`revision`,
            `token`, `cache_dir`, ...) otherwise.
    """
    if is_checkpoint_file(source):
        return convert_openclip_checkpoint(source, **kwargs)
    with _loading("CLIP", source):
        config = AutoConfig.from_pretrained(os.fspath(source), **kwargs)
        if isinstance(config, PosSamClipConfig):
            return load_possam_clip(os.fspath(source), config=config, **kwargs)
        if isinstance(config, CLIPConfig):
            return load_transformers_clip(os.fspath(source), config=config, **kwargs)
    raise CheckpointError(
        f"{source}: expected a transformers CLIPModel (model_type 'clip') or converted PosSAM CLIP towers "
        f"(model_type '{PosSamClipConfig.model_type}'), got model_type {config.model_type!r}."
    )


def load_sam_backbone(source: str | os.PathLike, **kwargs) -> SamWeights:
    """SAM from any supported source -> its image encoder (`SamVisionConfig`, `SamVisionModel` state dict) and, if the
    checkpoint has them, its prompt encoder and mask decoder.

    Args:
        source: an original segment-anything `.pth` file, or a Hub id / local folder of a transformers SAM.
        kwargs: `SamVisionConfig` overrides for a `.pth` file; `from_pretrained` arguments otherwise.
    """
    if is_checkpoint_file(source):
        return convert_sam_checkpoint(source, **kwargs)
    with _loading("SAM", source):
        return load_transformers_sam(os.fspath(source), **kwargs)


@contextlib.contextmanager
def _loading(kind: str, source: str | os.PathLike):
    """Names the checkpoint in errors of the Hub / folder loaders (an offline Hub error does not say which one)."""
    if looks_like_local_path(source) and not os.path.exists(source):
        raise FileNotFoundError(f"{os.fspath(source)}: no such {kind} checkpoint file or folder.")
    try:
        yield
    except OSError as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise OSError(f"cannot load the {kind} checkpoint {os.fspath(source)!r}: {reason}") from error


# ---------------------------------------------------------------------------------------------------- PosSAM


def possam_config_for_backbones(
    sam_vision: SamVisionConfig,
    clip: PosSamClipConfig,
    config: PosSamConfig | str | None = None,
    sam_prompt_decoder: SamPromptDecoderWeights | None = None,
    /,
    **config_overrides,
) -> PosSamConfig:
    """The `PosSamConfig` of a model built on these towers.

    Args:
        sam_vision, clip: the towers' configurations, as read from their checkpoints.
        sam_prompt_decoder: SAM's prompt encoder and mask decoder from the same checkpoint; without them, their
            configurations follow the image encoder's (`PosSamConfig` defaults).
        config: where the trainable parts' settings come from: a `PosSamConfig`, a preset name (`"tiny"`, `"base"`,
            `"large"`, `"huge"`; the B/L/H names also check that the SAM checkpoint is the matching ViT), or `None` for
            the `"base"` preset's. Its tower configurations are replaced by the checkpoints'.
        config_overrides: `PosSamConfig` fields to set; dict values for sub-configurations (`clip_config={"input_size":
            448}`) are merged into them.
    """
    if config is None or isinstance(config, str):
        preset = config or "base"
        base = possam_preset(preset)
        size = SAM_VISION_SIZES.get(preset) if config is not None else None
        if size is not None and (sam_vision.hidden_size, sam_vision.num_hidden_layers) != (
            size["hidden_size"],
            size["num_hidden_layers"],
        ):
            raise ValueError(
                f"Preset {preset!r} is PosSAM with SAM ViT-{preset[0].upper()} (hidden_size {size['hidden_size']}, "
                f"{size['num_hidden_layers']} layers), but the SAM checkpoint has hidden_size {sam_vision.hidden_size} "
                f"and {sam_vision.num_hidden_layers} layers."
            )
    elif isinstance(config, PosSamConfig):
        base = config
    else:
        raise TypeError(f"config must be a PosSamConfig, a preset name or None, got {type(config).__name__}.")
    values = base.to_dict()
    values["sam_vision_config"] = sam_vision.to_dict()
    if sam_prompt_decoder is None:
        values["sam_prompt_encoder_config"] = values["sam_mask_decoder_config"] = None
    else:
        values["sam_prompt_encoder_config"] = sam_prompt_decoder.prompt_encoder_config.to_dict()
        values["sam_mask_decoder_config"] = sam_prompt_decoder.mask_decoder_config.to_dict()
    values["clip_config"] = clip.to_dict()
    # LDP embeddings live in CLIP's embedding space: follow the checkpoint's width unless set explicitly.
    values["ldp_hidden_size"] = None
    _merge(values, config_overrides)
    return PosSamConfig.from_dict(values)


def build_from_pretrained_backbones(
    model_class: type[nn.Module],
    sam: str | os.PathLike,
    clip: str | os.PathLike,
    config: PosSamConfig | str | None = None,
    sam_kwargs: dict | None = None,
    clip_kwargs: dict | None = None,
    /,
    **config_overrides,
):
    """Implements `PosSamModel.from_pretrained_backbones`: loads both towers, builds the config, instantiates
    `model_class` (trainable parts freshly initialized) and loads the towers strictly. Returns it in eval mode."""
    sam_weights = load_sam_backbone(sam, **(sam_kwargs or {}))
    clip_config, clip_state = load_clip_backbone(clip, **(clip_kwargs or {}))
    possam_config = possam_config_for_backbones(
        sam_weights.vision_config, clip_config, config, sam_weights.prompt_decoder, **config_overrides
    )
    # Recorded so that the model card can name the towers' origin (and `base_model` when it is a Hub id).
    possam_config.sam_pretrained, possam_config.clip_pretrained = os.fspath(sam), os.fspath(clip)
    model = model_class(possam_config)
    load_checked(model.sam, sam_weights.vision_state_dict, f"SAM checkpoint {os.fspath(sam)}", "PosSamModel.sam")
    if sam_weights.prompt_decoder is None:
        logger.warning(
            f"SAM checkpoint {os.fspath(sam)} has only the image encoder: SAM's prompt encoder and mask decoder stay "
            "randomly initialized, so segment_prompts gives meaningless masks. Use a full SAM checkpoint (a "
            "transformers SamModel or Meta's .pth) for promptable segmentation."
        )
    else:
        load_checked(
            model.sam_prompt_decoder,
            sam_weights.prompt_decoder.state_dict,
            f"SAM checkpoint {os.fspath(sam)}",
            "PosSamModel.sam_prompt_decoder",
        )
    load_checked(model.clip, clip_state, f"CLIP checkpoint {os.fspath(clip)}", "PosSamModel.clip")
    return model.eval()


# ---------------------------------------------------------------------------------------------------- sizes


def parameter_counts(model: nn.Module) -> OrderedDict[str, dict[str, int]]:
    """Trainable and frozen parameter counts per part: each top-level module, with `clip` split into `clip.vision`,
    `clip.text` and CLIP's own `clip.logit_scale`; plus a `total` row. Works on `meta`-device models."""
    counts: OrderedDict[str, dict[str, int]] = OrderedDict()
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        part = ".".join(parts[:2]) if parts[0] == "clip" else parts[0]
        row = counts.setdefault(part, {"trainable": 0, "frozen": 0})
        row["trainable" if parameter.requires_grad else "frozen"] += parameter.numel()
    counts["total"] = {kind: sum(row[kind] for row in counts.values()) for kind in ("trainable", "frozen")}
    return counts


def _merge(values: dict, overrides: Mapping) -> None:
    for key, value in overrides.items():
        if isinstance(value, PreTrainedConfig):
            value = value.to_dict()
        if isinstance(value, Mapping) and isinstance(values.get(key), dict):
            _merge(values[key], value)
        else:
            values[key] = value
