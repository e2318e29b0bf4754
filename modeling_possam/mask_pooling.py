"""Mask pooling: the mean of a feature map over each query's binarized mask.

Used three times per prediction: over SAM's `mask_features` (LDP's SAM stream and the IoU head) and over CLIP's dense
features (LDP's CLIP stream and the out-of-vocabulary logits). As in FC-CLIP, mask logits at the feature map's
resolution (for CLIP's map, from `decoder.ResizedMaskFeatures`) are binarized at logit > 0 and carry no gradient:
pooling must not teach the mask branch to shrink or grow masks to please the classifier.

A mask can be empty at a coarse map's resolution (a small object at CLIP's stride 32, or an untrained query). FC-CLIP
then pools a zero vector, which gives every such region the same embedding and, for LDP, a zero starting embedding
whose normalization explodes the gradient. Here an empty mask instead pools with the softmax of its logits over the
map: the places the query points to most, weights that always sum to one.
"""

from __future__ import annotations

import torch


def pooling_weights(mask_logits: torch.Tensor) -> torch.Tensor:
    """`(batch, K, h, w)` mask logits at the feature map's resolution -> `(batch, K, h, w)` pooling weights, without
    gradient: the binary mask (logit > 0), or the spatial softmax of the logits for a mask with no foreground pixel.
    """
    logits = mask_logits.detach()
    binary = (logits > 0).to(logits.dtype)
    empty = binary.flatten(2).sum(-1) == 0
    if torch.compiler.is_exporting():
        # An exported graph cannot branch on values: the softmax of every mask, kept where the mask is empty.
        soft = logits.flatten(2).float().softmax(-1).view_as(logits).to(logits.dtype)
        return torch.where(empty[..., None, None], soft, binary)
    if empty.any():
        # Only the empty masks' softmax: at stride 4 the whole `(batch, K, h, w)` softmax and `where` cost more than
        # the pooling product itself (training pools every decoder prediction there).
        empty_logits = logits[empty]
        binary[empty] = empty_logits.flatten(1).float().softmax(-1).view_as(empty_logits).to(logits.dtype)
    return binary


def mask_pool(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of `(batch, C, H, W)` features under `(batch, K, H, W)` pooling weights -> `(batch, K, C)`."""
    weights = weights.to(features.dtype)
    total = weights.sum(dim=(-2, -1)).clamp(min=torch.finfo(features.dtype).tiny)
    pooled = torch.bmm(weights.flatten(2), features.flatten(2).transpose(1, 2))
    return pooled / total.unsqueeze(-1)
