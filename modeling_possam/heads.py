"""The IoU head: predicts, for each query, the IoU of its mask with the object it stands for.

MASE uses the prediction twice at inference: to re-rank segments ("prioritize confident masks") and to decide which
queries are reliable enough to vote a class "seen" in the image. The head reads the query state and its mask-pooled
pixel features, both detached, so the IoU loss trains the head alone and cannot bend masks or queries toward being
easy to score.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import Mask2FormerMLPPredictionHead

from .configuration import PosSamConfig


class PosSamIouHead(nn.Module):
    """`query_states (batch, K, hidden_dim)`, `pooled_mask_features (batch, K, mask_feature_size)` -> IoU `(batch, K)`."""

    def __init__(self, config: PosSamConfig):
        super().__init__()
        self.pooled_projection = nn.Sequential(
            nn.LayerNorm(config.mask_feature_size), nn.Linear(config.mask_feature_size, config.hidden_dim)
        )
        self.mlp = Mask2FormerMLPPredictionHead(
            config.hidden_dim, config.iou_head_hidden_dim, 1, num_layers=config.iou_head_num_layers
        )

    def forward(self, query_states: torch.Tensor, pooled_mask_features: torch.Tensor) -> torch.Tensor:
        hidden = query_states.detach() + self.pooled_projection(pooled_mask_features.detach())
        return self.mlp(hidden).squeeze(-1).sigmoid()
