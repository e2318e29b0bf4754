"""Mask pooling: the mean of a feature map over each query's binarized mask.

Used three times per prediction: over SAM's `mask_features` (LDP's SAM stream and the IoU head) and over CLIP's dense
features (LDP's CLIP stream and the out-of-vocabulary logits). As in FC-CLIP, mask logits are resized to the feature
map, binarized at logit > 0, and carry no gradient: pooling must not teach the mask branch to shrink or grow masks to
please the classifier.
"""

from __future__ import annotations

import torch
from torch import nn


def binarize_masks(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(batch, K, h, w)` mask logits -> `(batch, K, *size)` {0, 1} masks (bilinear resize, then logit > 0)."""
    mask_logits = mask_logits.detach()
    if tuple(mask_logits.shape[-2:]) != tuple(size):
        mask_logits = nn.functional.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    return (mask_logits > 0).to(mask_logits.dtype)


def mask_pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of `(batch, C, H, W)` features over each `(batch, K, H, W)` binary mask -> `(batch, K, C)`.

    An empty mask pools to the zero vector.
    """
    masks = masks.to(features.dtype)
    area = masks.sum(dim=(-2, -1)).clamp(min=1.0)
    pooled = torch.bmm(masks.flatten(2), features.flatten(2).transpose(1, 2))
    return pooled / area.unsqueeze(-1)
