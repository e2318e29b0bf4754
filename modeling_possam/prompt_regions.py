"""Naming a mask that came from a prompt (a click, a box) with PosSAM's open-vocabulary classifier.

A panoptic query k is classified from three inputs: its CLIP stream `c_k` (CLIP features mask-pooled, CLIP's region
head), the `mask_features` pooled over its mask, and its decoder query state `q_k` (LDP, module `ldp`). A mask from
SAM's prompt decoder has the first two (pooling works on any mask) but no query state. It borrows the state of the
decoder query whose mask overlaps it most (highest IoU at stride 4): the query that segmented the same region, whose
state carries what the decoder learned about it. The prompt regions then go through LDP *together with* the image's
K panoptic queries, so self-attention fusion sees the same context as in training, and only the prompt regions'
outputs are classified. Nothing is retrained: every weight involved is PosSAM's or CLIP's as trained.
"""

from __future__ import annotations

import torch


def matching_query_index(region_masks: torch.Tensor, query_masks: torch.Tensor) -> torch.LongTensor:
    """For each region, the query whose binarized mask has the highest IoU with the region's.

    Args:
        region_masks: `(batch, R, h, w)` mask logits of the prompt regions.
        query_masks: `(batch, K, h, w)` mask logits of the decoder queries, same resolution.

    Returns:
        `(batch, R)` indices into the K queries (ties and all-empty masks pick the lowest index).
    """
    regions = (region_masks > 0).flatten(2).float()
    queries = (query_masks > 0).flatten(2).float()
    intersection = regions @ queries.transpose(1, 2)
    union = regions.sum(-1, keepdim=True) + queries.sum(-1).unsqueeze(1) - intersection
    return (intersection / union.clamp(min=1)).argmax(dim=-1)
