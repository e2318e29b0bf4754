"""The frozen CLIP of PosSAM: a dense vision tower, a region head, and the text tower.

PosSAM classifies a region by mask-pooling CLIP's dense image features and mapping the pooled vector into the joint
image-text space (FC-CLIP's out-of-vocabulary branch, and LDP's CLIP stream). Two vision towers are supported:

- ConvNeXt (OpenCLIP `convnext_large_d_320`, FC-CLIP's CLIP): dense features are the last stage's output (stride 32);
  the region head is the trunk's final LayerNorm followed by OpenCLIP's 2-layer MLP projection. ConvNeXt runs at any
  resolution, so it sees the full 1024x1024 input.
- ViT (a transformers `CLIPModel`): dense features are the last layer's patch tokens through `post_layernorm` and the
  visual projection, i.e. already in the joint space, so the region head is the identity.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection, ConvNextModel
from transformers.activations import ACT2FN

from .configuration import PosSamClipConfig
from .outputs import PosSamTextEmbeddings
from .text_classifier import classify_regions


class PosSamConvNextRegionHead(nn.Module):
    """OpenCLIP's MLP projection of ConvNeXt CLIP: `fc1` (with bias), activation, `fc2` (without bias)."""

    def __init__(self, config: PosSamClipConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.dense_feature_dim, config.head_hidden_size)
        self.act = ACT2FN[config.head_hidden_act]
        self.fc2 = nn.Linear(config.head_hidden_size, config.projection_dim, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class PosSamConvNextClipVision(nn.Module):
    """ConvNeXt CLIP image tower: `ConvNextModel` trunk + region head."""

    def __init__(self, config: PosSamClipConfig):
        super().__init__()
        # ConvNeXt has no attention: whatever implementation PosSAM was asked for (sdpa, eager), the trunk takes the
        # only one transformers accepts for it, rather than refusing to build.
        config.vision_config._attn_implementation = "eager"
        self.trunk = ConvNextModel(config.vision_config)
        self.head = PosSamConvNextRegionHead(config)

    def dense_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(batch, 3, H, W)` CLIP-normalized pixels -> `(batch, C_dense, H / 32, W / 32)` last-stage features."""
        return self.trunk(pixel_values).last_hidden_state

    def embed_regions(self, pooled_features: torch.Tensor) -> torch.Tensor:
        """`(..., C_dense)` mask-pooled dense features -> `(..., projection_dim)` region embeddings.

        The pooled vector stands in for the trunk's global average pool, so it goes through the same final LayerNorm
        the image embedding does before the projection.
        """
        return self.head(self.trunk.layernorm(pooled_features))


class PosSamVitClipVision(nn.Module):
    """ViT CLIP image tower (`CLIPVisionModelWithProjection`): projected patch tokens as dense features."""

    def __init__(self, config: PosSamClipConfig):
        super().__init__()
        self.model = CLIPVisionModelWithProjection(config.vision_config)
        self.patch_size = config.vision_config.patch_size

    def dense_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(batch, 3, H, W)` -> `(batch, projection_dim, H / patch, W / patch)` projected patch tokens."""
        vision = self.model.vision_model
        tokens = vision(pixel_values, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
        embeddings = self.model.visual_projection(vision.post_layernorm(tokens))
        height, width = pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size
        return embeddings.transpose(1, 2).reshape(embeddings.shape[0], -1, height, width)

    def embed_regions(self, pooled_features: torch.Tensor) -> torch.Tensor:
        # Patch tokens were already projected: pooling happened in the joint space.
        return pooled_features


class PosSamClip(nn.Module):
    """CLIP towers used by PosSAM: `vision` (dense features + region head), `text` and CLIP's own logit scale."""

    def __init__(self, config: PosSamClipConfig):
        super().__init__()
        self.config = config
        self.vision = PosSamConvNextClipVision(config) if config.is_convnext else PosSamVitClipVision(config)
        self.text = CLIPTextModelWithProjection(config.text_config)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))

    def normalize_pixels(self, pixels_0_255: torch.Tensor) -> torch.Tensor:
        """Applies CLIP's mean/std and, if `input_size` is set, resizes to the CLIP input size."""
        mean, std = (
            torch.tensor(values, device=pixels_0_255.device, dtype=pixels_0_255.dtype).view(1, 3, 1, 1)
            for values in (self.config.image_mean, self.config.image_std)
        )
        pixels = (pixels_0_255 - mean) / std
        size = self.config.input_size
        if size is not None and pixels.shape[-1] != size:
            pixels = nn.functional.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        return pixels

    def forward(self, region_embeddings: torch.Tensor, text: PosSamTextEmbeddings, max_logit_scale: float) -> torch.Tensor:
        """CLIP's own classification of regions: `(batch, K, D)` region embeddings -> `(batch, K, C)` logits with CLIP's
        logit scale (clamped to `max_logit_scale`). A module call, so that a model dispatched with offloading
        (`device_map`) loads `logit_scale` to the execution device first."""
        return classify_regions(region_embeddings, text, self.logit_scale.exp().clamp(max=max_logit_scale))

    def encode_text(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(num_prompts, length)` token ids -> `(num_prompts, projection_dim)` text embeddings (not normalized)."""
        return self.text(input_ids=input_ids, attention_mask=attention_mask).text_embeds
