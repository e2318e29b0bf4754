"""Named PosSAM configurations: the paper's B/L/H models and a tiny one for tests and the demo."""

from __future__ import annotations

from .configuration_possam import PosSamConfig


# SAM ViT image encoders of the public checkpoints facebook/sam-vit-{base,large,huge}.
SAM_VISION_SIZES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "global_attn_indexes": [2, 5, 8, 11]},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "global_attn_indexes": [5, 11, 17, 23]},
    "huge": {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16, "global_attn_indexes": [7, 15, 23, 31]},
}

PRESETS = ("tiny", "base", "large", "huge")

# A model small enough to train for a few steps on 2 CPU cores: 128x128 inputs, 8x8 SAM map, 10 queries. Its towers
# are random, so SAM gets a usable init scale: SAM's default initializer_range (1e-10) assumes pretrained weights will
# overwrite it and makes a random encoder output ~1e-21, i.e. the same features for every image.
TINY_KWARGS = {
    "sam_vision_config": {
        "initializer_range": 0.02, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 64, "output_channels": 32,
        "image_size": 128, "patch_size": 16, "window_size": 4, "global_attn_indexes": [1], "num_pos_feats": 16,
    },
    # SAM's promptable decoder at the tiny encoder's width (the prompt encoder follows the encoder by default).
    "sam_mask_decoder_config": {"hidden_size": 32, "num_attention_heads": 2, "mlp_dim": 64, "iou_head_hidden_dim": 32},
    "clip_config": {
        "vision_config": {"model_type": "convnext", "depths": [1, 1, 1, 1], "hidden_sizes": [16, 32, 48, 64],
                          "layer_norm_eps": 1e-6},
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "projection_dim": 32, "hidden_act": "gelu", "pad_token_id": 49407},
        "projection_dim": 32,
        "head_hidden_size": 64,
    },
    "fpn_hidden_size": 32, "feature_size": 32, "mask_feature_size": 32, "encoder_layers": 1,
    "encoder_feedforward_dim": 64, "num_queries": 10, "hidden_dim": 32, "decoder_layers": 3, "num_attention_heads": 2,
    "dim_feedforward": 64, "iou_head_hidden_dim": 32, "ldp_num_heads": 2, "ldp_intermediate_size": 64,
    "train_num_points": 1024,
}


def possam_preset(name: str, **overrides) -> PosSamConfig:
    """Returns the configuration of a named preset: `tiny`, `base` (PosSAM-B), `large` (PosSAM-L), `huge` (PosSAM-H).

    B/L/H pair the SAM ViT-B/L/H image encoder with OpenCLIP ConvNeXt-Large, as in the paper's Table 1. Keyword
    arguments override preset fields (sub-config dicts are merged one level deep).
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown PosSAM preset {name!r}; choose one of {list(PRESETS)}.")
    kwargs = {"sam_vision_config": dict(SAM_VISION_SIZES[name])} if name in SAM_VISION_SIZES else _copy(TINY_KWARGS)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
            kwargs[key] = {**kwargs[key], **value}
        else:
            kwargs[key] = value
    return PosSamConfig(**kwargs)


def _copy(tree):
    return {k: _copy(v) if isinstance(v, dict) else (list(v) if isinstance(v, list) else v) for k, v in tree.items()}
