"""Local Discriminative Pooling (LDP): the region embedding PosSAM classifies against class-name embeddings.

SAM features are excellent at *where* an object is but carry little of *what* it is; CLIP's are the reverse. For each
query, LDP takes two mask-pooled views of its region:

- the CLIP stream `c_k`: CLIP's dense features mean-pooled over the mask, through CLIP's frozen region head. It lives
  in the joint image-text space and is discriminative, including for classes never seen in training;
- the SAM stream `s_k = MLP(Linear(LN(pooled mask_features)) + q_k)`: class-agnostic, learned on the training set.

and fuses them (`config.ldp_fusion`):

- `"self_attention"` (default): the 2K tokens `{c_k + e_clip, s_k + e_sam}` go through `ldp_layers` transformer
  self-attention layers, so each region sees every other region in both streams; `G_k = c_k + Proj(out_c_k + out_s_k)`.
- `"sum"`: `G_k = c_k + Proj(s_k)`.
- `"concat_mlp"`: `G_k = c_k + MLP([c_k; s_k])`.
- `"none"`: `G_k = s_k`, FC-CLIP's in-vocabulary classifier (the ablation without LDP).

The last projection of every fusion that adds to `c_k` is zero-initialized, so training starts from pure CLIP, whose
zero-shot ranking keeps unseen classes unbiased while the residual learns the training domain.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import Mask2FormerMLPPredictionHead

from .configuration import PosSamConfig


class PosSamLocalDiscriminativePooling(nn.Module):
    """Fuses each query's CLIP and SAM region embeddings into `G_k`, `(batch, K, ldp_hidden_size)`."""

    def __init__(self, config: PosSamConfig):
        super().__init__()
        dim = config.ldp_hidden_size
        self.fusion = config.ldp_fusion
        self.sam_pooled_projection = nn.Sequential(
            nn.LayerNorm(config.mask_feature_size), nn.Linear(config.mask_feature_size, config.hidden_dim)
        )
        self.sam_embed = Mask2FormerMLPPredictionHead(config.hidden_dim, config.hidden_dim, dim, num_layers=3)
        if self.fusion == "self_attention":
            self.stream_embeddings = nn.Embedding(2, dim)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    dim,
                    config.ldp_num_heads,
                    dim_feedforward=config.ldp_intermediate_size,
                    dropout=config.dropout,
                    activation="gelu",
                    batch_first=True,
                    norm_first=True,
                )
                for _ in range(config.ldp_layers)
            )
            self.output_projection = nn.Linear(dim, dim)
        elif self.fusion == "sum":
            self.output_projection = nn.Linear(dim, dim)
        elif self.fusion == "concat_mlp":
            self.fusion_mlp = nn.Sequential(
                nn.Linear(2 * dim, config.ldp_intermediate_size),
                nn.GELU(),
                nn.Linear(config.ldp_intermediate_size, dim),
            )

    def zero_initialized_layers(self) -> list[nn.Linear]:
        """The projections whose output is added to `c_k`; zero at initialization (see module docstring)."""
        if self.fusion in ("self_attention", "sum"):
            return [self.output_projection]
        if self.fusion == "concat_mlp":
            return [self.fusion_mlp[-1]]
        return []

    def forward(
        self, clip_region_embeddings: torch.Tensor, pooled_mask_features: torch.Tensor, query_states: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            clip_region_embeddings: `(batch, K, dim)` CLIP stream `c_k` (frozen; carries no gradient).
            pooled_mask_features: `(batch, K, mask_feature_size)` the decoder's `mask_features` mean-pooled over each
                binarized mask.
            query_states: `(batch, K, hidden_dim)` layer-normalized decoder query states.
        """
        sam_stream = self.sam_embed(self.sam_pooled_projection(pooled_mask_features) + query_states)
        if self.fusion == "none":
            return sam_stream
        clip_stream = clip_region_embeddings.to(sam_stream.dtype)
        if self.fusion == "sum":
            return clip_stream + self.output_projection(sam_stream)
        if self.fusion == "concat_mlp":
            return clip_stream + self.fusion_mlp(torch.cat([clip_stream, sam_stream], dim=-1))

        num_queries = clip_stream.shape[1]
        # Called rather than read through `.weight`, so that an offloaded model (`device_map`) loads the table.
        stream_embeddings = self.stream_embeddings(torch.arange(2, device=clip_stream.device))
        tokens = torch.cat([clip_stream + stream_embeddings[0], sam_stream + stream_embeddings[1]], dim=1)
        for layer in self.layers:
            tokens = layer(tokens)
        fused = tokens[:, :num_queries] + tokens[:, num_queries:]
        return clip_stream + self.output_projection(fused)
