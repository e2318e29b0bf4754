"""OpenCLIP ConvNeXt CLIP checkpoints (FC-CLIP's `convnext_large_d_320`) -> PosSAM's CLIP towers (`PosSamClip`).

OpenCLIP builds the image tower from a timm ConvNeXt (`visual.trunk.*`) and a 2-layer MLP projection
(`visual.head.mlp.*`), and its own text transformer (top-level keys). They map onto transformers parts:

    visual.trunk.stem.{0,1}.*                   -> vision.trunk.embeddings.{patch_embeddings,layernorm}.*
    visual.trunk.stages.{s}.downsample.{0,1}.*  -> vision.trunk.encoder.stages.{s}.downsampling_layer.{0,1}.*
    visual.trunk.stages.{s}.blocks.{b}.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}
        -> vision.trunk.encoder.stages.{s}.layers.{b}.{dwconv,layernorm,pwconv1,pwconv2,layer_scale_parameter}
    visual.trunk.head.norm.*                    -> vision.trunk.layernorm.*   (applied after pooling, as in timm)
    visual.head.mlp.fc{1,2}.*                   -> vision.head.fc{1,2}.*
    token_embedding, positional_embedding       -> text.text_model.embeddings.{token,position}_embedding.weight
    transformer.resblocks.{i}.attn.in_proj_*    -> ...layers.{i}.self_attn.{q,k,v}_proj.*   (packed q, k, v split)
    transformer.resblocks.{i}.{ln_1,ln_2,mlp.c_fc,mlp.c_proj,attn.out_proj}
        -> text.text_model.encoder.layers.{i}.{layer_norm1,layer_norm2,mlp.fc1,mlp.fc2,self_attn.out_proj}
    ln_final                                    -> text.text_model.final_layer_norm
    text_projection (x @ W)                     -> text.text_projection.weight = W^T (a Linear)
    logit_scale                                 -> logit_scale

Shapes give the configuration: ConvNeXt depths and widths, the MLP head width, the text width, depth, context length
and embedding size. Two facts are not in the weights: the text heads (OpenCLIP uses 64-wide heads) and the text
activation (GELU for the ConvNeXt models; OpenAI-style models use QuickGELU); both are arguments.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from transformers import CLIPTextConfig, ConvNextConfig

from .checkpoint_io import CheckpointError, convert_state_dict, expected_shapes, read_state_dict, rule
from .clip_towers import PosSamClip
from .configuration import PosSamClipConfig
from .configuration.configuration_possam import CLIP_PAD_TOKEN_ID


def _split_qkv(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    # Clones, not views: the three projections are saved as separate tensors (safetensors refuses shared storage).
    return tuple(part.clone() for part in tensor.chunk(3, dim=0))


def _transpose(tensor: torch.Tensor) -> tuple[torch.Tensor]:
    return (tensor.T.contiguous(),)


def _pointwise(tensor: torch.Tensor) -> tuple[torch.Tensor]:
    # timm's `conv_mlp` ConvNeXt variants store the block MLP as 1x1 convolutions; transformers uses Linear layers.
    return (tensor.flatten(1) if tensor.ndim == 4 and tensor.shape[2:] == (1, 1) else tensor,)


_BLOCK = "vision.trunk.encoder.stages.{s}.layers.{b}"
_TEXT_LAYER = "text.text_model.encoder.layers.{i}"

OPENCLIP_CONVNEXT_RULES = (
    rule("visual.trunk.stem.0.{p}", "vision.trunk.embeddings.patch_embeddings.{p}"),
    rule("visual.trunk.stem.1.{p}", "vision.trunk.embeddings.layernorm.{p}"),
    rule("visual.trunk.stages.{s}.downsample.{n}.{p}", "vision.trunk.encoder.stages.{s}.downsampling_layer.{n}.{p}"),
    rule("visual.trunk.stages.{s}.blocks.{b}.conv_dw.{p}", _BLOCK + ".dwconv.{p}"),
    rule("visual.trunk.stages.{s}.blocks.{b}.norm.{p}", _BLOCK + ".layernorm.{p}"),
    rule("visual.trunk.stages.{s}.blocks.{b}.mlp.fc1.{p}", _BLOCK + ".pwconv1.{p}", transform=_pointwise),
    rule("visual.trunk.stages.{s}.blocks.{b}.mlp.fc2.{p}", _BLOCK + ".pwconv2.{p}", transform=_pointwise),
    rule("visual.trunk.stages.{s}.blocks.{b}.gamma", _BLOCK + ".layer_scale_parameter"),
    rule("visual.trunk.head.norm.{p}", "vision.trunk.layernorm.{p}"),
    rule("visual.head.mlp.fc1.{p}", "vision.head.fc1.{p}"),
    rule("visual.head.mlp.fc2.{p}", "vision.head.fc2.{p}"),
    rule("token_embedding.weight", "text.text_model.embeddings.token_embedding.weight"),
    rule("positional_embedding", "text.text_model.embeddings.position_embedding.weight"),
    rule(
        "transformer.resblocks.{i}.attn.in_proj_weight",
        *(f"{_TEXT_LAYER}.self_attn.{name}_proj.weight" for name in "qkv"),
        transform=_split_qkv,
    ),
    rule(
        "transformer.resblocks.{i}.attn.in_proj_bias",
        *(f"{_TEXT_LAYER}.self_attn.{name}_proj.bias" for name in "qkv"),
        transform=_split_qkv,
    ),
    rule("transformer.resblocks.{i}.attn.out_proj.{p}", _TEXT_LAYER + ".self_attn.out_proj.{p}"),
    rule("transformer.resblocks.{i}.ln_1.{p}", _TEXT_LAYER + ".layer_norm1.{p}"),
    rule("transformer.resblocks.{i}.ln_2.{p}", _TEXT_LAYER + ".layer_norm2.{p}"),
    rule("transformer.resblocks.{i}.mlp.c_fc.{p}", _TEXT_LAYER + ".mlp.fc1.{p}"),
    rule("transformer.resblocks.{i}.mlp.c_proj.{p}", _TEXT_LAYER + ".mlp.fc2.{p}"),
    rule("ln_final.{p}", "text.text_model.final_layer_norm.{p}"),
    rule("text_projection", "text.text_projection.weight", transform=_transpose),
    rule("logit_scale"),
)

# The causal mask of the text tower is a derived buffer (older OpenCLIP versions saved it), not a weight.
_OPENCLIP_DERIVED = ("attn_mask",)

_STEM_KEY = "visual.trunk.stem.0.weight"


def openclip_clip_config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    source_name: str = "OpenCLIP checkpoint",
    text_head_dim: int = 64,
    text_hidden_act: str = "gelu",
) -> PosSamClipConfig:
    """Infers the `PosSamClipConfig` of an OpenCLIP ConvNeXt CLIP from its tensor shapes (keys without any prefix).

    Args:
        state_dict: OpenCLIP keys (`visual.trunk.*`, `visual.head.*`, `token_embedding.weight`, ...).
        source_name: names the checkpoint in errors.
        text_head_dim: width of one text attention head (64 in OpenCLIP): heads = text width / text_head_dim.
        text_hidden_act: the text MLP activation, `"gelu"` for OpenCLIP ConvNeXt models, `"quick_gelu"` for models
            trained with OpenAI's QuickGELU.
    """

    def tensor(name: str) -> torch.Tensor:
        if name not in state_dict:
            raise CheckpointError(f"{source_name}: missing key {name}, needed to infer the CLIP configuration.")
        return state_dict[name]

    stages = _indices(state_dict, r"visual\.trunk\.stages\.(\d+)\.")
    if not stages or stages != list(range(len(stages))):
        raise CheckpointError(f"{source_name}: ConvNeXt stages are missing or not numbered 0..N-1 (found {stages}).")
    depths = [len(_indices(state_dict, rf"visual\.trunk\.stages\.{stage}\.blocks\.(\d+)\.")) for stage in stages]
    hidden_sizes = [tensor(f"visual.trunk.stages.{stage}.blocks.0.conv_dw.weight").shape[0] for stage in stages]
    width = tensor("token_embedding.weight").shape[1]
    if width % text_head_dim:
        raise CheckpointError(f"{source_name}: text width {width} is not a multiple of the head width {text_head_dim}.")
    head_hidden_size, dense_feature_dim = tensor("visual.head.mlp.fc1.weight").shape
    projection_dim = tensor("text_projection").shape[1]
    vision_config = ConvNextConfig(
        num_channels=tensor(_STEM_KEY).shape[1],
        patch_size=tensor(_STEM_KEY).shape[-1],
        num_stages=len(stages),
        depths=depths,
        hidden_sizes=hidden_sizes,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        # Only whether layer scale exists matters: the converted `gamma` values overwrite the initial value.
        layer_scale_init_value=1e-6 if "visual.trunk.stages.0.blocks.0.gamma" in state_dict else 0.0,
    )
    text_config = CLIPTextConfig(
        vocab_size=tensor("token_embedding.weight").shape[0],
        hidden_size=width,
        intermediate_size=tensor("transformer.resblocks.0.mlp.c_fc.weight").shape[0],
        num_hidden_layers=len(_indices(state_dict, r"transformer\.resblocks\.(\d+)\.")),
        num_attention_heads=width // text_head_dim,
        max_position_embeddings=tensor("positional_embedding").shape[0],
        hidden_act=text_hidden_act,
        projection_dim=projection_dim,
        layer_norm_eps=1e-5,
        pad_token_id=CLIP_PAD_TOKEN_ID,
    )
    return PosSamClipConfig(
        vision_config=vision_config,
        text_config=text_config,
        projection_dim=projection_dim,
        head_hidden_size=head_hidden_size,
        logit_scale_init_value=float(tensor("logit_scale")),
    )


def convert_openclip_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    source_name: str = "OpenCLIP checkpoint",
    text_head_dim: int = 64,
    text_hidden_act: str = "gelu",
) -> tuple[PosSamClipConfig, dict[str, torch.Tensor]]:
    """OpenCLIP ConvNeXt CLIP state dict -> (`PosSamClipConfig`, `PosSamClip` state dict).

    The CLIP keys may sit under a prefix (`module.`, or the CLIP inside a larger model such as FC-CLIP's
    `backbone.clip_model.`); the prefix is found from the ConvNeXt stem, and keys outside it (the rest of the larger
    model) are not converted. Inside it, every key must convert.

    Raises:
        CheckpointError: not an OpenCLIP ConvNeXt CLIP, or keys missing, unexpected or mis-shaped.
    """
    stems = [key for key in state_dict if key.endswith(_STEM_KEY)]
    if len(stems) != 1:
        found = ", ".join(list(state_dict)[:3])
        kind = (
            " (an OpenCLIP ViT: convert it to a transformers CLIPModel instead)"
            if any(key.endswith("visual.conv1.weight") for key in state_dict)
            else ""
        )
        raise CheckpointError(
            f"{source_name}: not an OpenCLIP ConvNeXt CLIP{kind}: expected one '{_STEM_KEY}' key, found "
            f"{len(stems)} (keys start with {found})."
        )
    prefix = stems[0][: -len(_STEM_KEY)]
    clip_state = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    config = openclip_clip_config_from_state_dict(clip_state, source_name, text_head_dim, text_hidden_act)
    with torch.device("meta"):
        expected = expected_shapes(PosSamClip(config))
    converted = convert_state_dict(
        clip_state,
        OPENCLIP_CONVNEXT_RULES,
        expected,
        source_name,
        "PosSamClip (transformers ConvNextModel + MLP head + CLIPTextModelWithProjection)",
        ignore=lambda key: key in _OPENCLIP_DERIVED,
    )
    return config, converted


def convert_openclip_checkpoint(
    path: str | os.PathLike, text_head_dim: int = 64, text_hidden_act: str = "gelu"
) -> tuple[PosSamClipConfig, dict[str, torch.Tensor]]:
    """Reads an OpenCLIP checkpoint file (`.bin`/`.pt`/`.pth`/`.safetensors`, possibly wrapped in `{"state_dict": ...}`)
    and converts it with `convert_openclip_state_dict`."""
    return convert_openclip_state_dict(read_state_dict(path), os.fspath(path), text_head_dim, text_hidden_act)


def _indices(state_dict: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(found.group(1)) for key in state_dict if (found := regex.match(key))})
