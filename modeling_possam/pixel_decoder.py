"""Mask2Former's pixel decoder with PosSAM's deformable attention and a feed-forward that streams through the cache.

The decoder is transformers' `Mask2FormerPixelDecoder`: same modules, parameter names, initialization and outputs.
Its encoder is [`PosSamPixelDecoderEncoder`], whose layers attend with [`PosSamMultiscaleDeformableAttention`].
Without autograd (inference) two more things change, both layout only, both for memory traffic:

- each layer runs everything after the attention (residual, LayerNorm, the 256 -> 1024 -> 256 feed-forward, residual,
  LayerNorm) over chunks of tokens. Whole, the feed-forward's hidden activation is 88 MB per layer at 1024x1024
  (21,504 tokens x 1024); a fresh allocation that large is handed out by the OS page by page, and on a 2-core VM the
  page faults of the activation and of its ReLU cost more than the matrix products that fill them. A chunk of 2048
  tokens (8 MB) is reused from the allocator's cache and stays in L3;
- the encoder hands its tokens over channel-major. The pixel decoder turns them into maps with `transpose` + `view`
  and upsamples the stride-8 map to stride 4: from token-major storage that view is channels-last with an odd batch
  stride, for which `interpolate` takes a slow path and transposes its 64 MB output (300 ms on 2 cores), against
  45 ms from channel-major storage, whose maps are plain NCHW rows.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderLayer,
    Mask2FormerPixelDecoderEncoderOnly,
)

from .deformable_attention import PosSamMultiscaleDeformableAttention


class PosSamPixelDecoderEncoderLayer(Mask2FormerPixelDecoderEncoderLayer):
    """transformers' pixel-decoder encoder layer (post-norm deformable self-attention + ReLU feed-forward) on
    [`PosSamMultiscaleDeformableAttention`], with the token-chunked feed-forward described in the module docstring
    when autograd does not record. With autograd the computation is transformers' layer's, dropout included."""

    feed_forward_chunk_size = 2048

    def __init__(self, config):
        super().__init__(config)
        attention = self.self_attn
        self.self_attn = PosSamMultiscaleDeformableAttention(
            attention.d_model, attention.n_heads, attention.n_levels, attention.n_points
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        position_embeddings: torch.Tensor | None = None,
        reference_points: torch.Tensor | None = None,
        spatial_shapes_list: list[tuple[int, int]] | None = None,
        level_start_index: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """
        Args:
            hidden_states: `(batch, tokens, embed_dim)` the flattened multi-scale features.
            attention_mask: `(batch, tokens)`, True where a token is padding.
            position_embeddings: `(batch, tokens, embed_dim)` position + level embeddings.
            reference_points: `(batch, tokens, levels, 2)` each token's (x, y) in [0, 1] on every level.
            spatial_shapes_list: `(h, w)` of each level.

        Returns:
            `((batch, tokens, embed_dim),)`, plus the attention weights `(batch, tokens, heads, levels, points)` when
            `output_attentions`.
        """
        if torch.is_grad_enabled() or self.training:
            return super().forward(
                hidden_states, attention_mask, position_embeddings, reference_points, spatial_shapes_list,
                level_start_index, output_attentions,
            )
        attended, attention_weights = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            encoder_hidden_states=hidden_states,
            encoder_attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            reference_points=reference_points,
            spatial_shapes_list=spatial_shapes_list,
            level_start_index=level_start_index,
        )
        output = torch.empty_like(hidden_states)
        for start in range(0, hidden_states.shape[1], self.feed_forward_chunk_size):
            chunk = slice(start, start + self.feed_forward_chunk_size)
            attended_chunk = self.self_attn_layer_norm(hidden_states[:, chunk] + attended[:, chunk])
            feed_forward = self.fc2(self.activation_fn(self.fc1(attended_chunk), inplace=True))
            output[:, chunk] = self.final_layer_norm(attended_chunk + feed_forward)
        return (output, attention_weights.transpose(1, 0)) if output_attentions else (output,)


class PosSamPixelDecoderEncoder(Mask2FormerPixelDecoderEncoderOnly):
    """transformers' pixel-decoder encoder on [`PosSamPixelDecoderEncoderLayer`]s, returning channel-major tokens
    without autograd (module docstring). `last_hidden_state` keeps its shape `(batch, tokens, embed_dim)`."""

    def __init__(self, config):
        super().__init__(config)
        self.layers = nn.ModuleList([PosSamPixelDecoderEncoderLayer(config) for _ in range(config.encoder_layers)])

    def forward(self, *args, **kwargs) -> BaseModelOutput:
        outputs = super().forward(*args, **kwargs)
        if not torch.is_grad_enabled():
            outputs.last_hidden_state = outputs.last_hidden_state.transpose(1, 2).contiguous().transpose(1, 2)
        return outputs


class PosSamPixelDecoder(Mask2FormerPixelDecoder):
    """transformers' `Mask2FormerPixelDecoder` on a [`PosSamPixelDecoderEncoder`].

    Same modules, parameter names and initialization; the output convolutions' ReLUs run in place (each follows a
    GroupNorm, whose backward does not read its output), which saves a 64 MB map at stride 4.
    """

    def __init__(self, config, feature_channels):
        super().__init__(config, feature_channels)
        # The replacements are built on a forked RNG: the random stream, hence every later part of a seeded model, stays
        # exactly as transformers' pixel decoder leaves it (their weights are initialized by `post_init` anyway).
        with torch.random.fork_rng(devices=[]):
            self.encoder = PosSamPixelDecoderEncoder(config)
        for output_convolution in self.output_convolutions:
            output_convolution[-1].inplace = True
