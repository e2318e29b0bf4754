"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch, laid out for the memory traffic of a CPU.

Mask2Former's pixel decoder runs six deformable-attention layers over every pixel of its three levels (21,504 tokens
at 1024x1024). transformers' `multi_scale_deformable_attention` samples each level with one `grid_sample` call, stacks
the levels' samples, multiplies the stack by the attention weights and sums it: it writes and re-reads a
`(batch * heads, head_dim, queries, levels * points)` tensor four times (88 MB per level and layer for PosSAM-B). The
arithmetic is small; the time goes to moving that tensor. [`multi_scale_deformable_attention`] computes the same
sum one sampling point at a time: `grid_sample` writes a `(batch * heads, head_dim, 1, queries)` map and its weighted
value is added into the output right away, so nothing is stacked, nothing is transposed, and the largest temporary is a
quarter of a level's samples. Without autograd the weighted add is in place (`addcmul_`). Forward is about twice as
fast on 2 CPU cores (README's performance section); backward is dominated by `grid_sample`'s own backward and
changes little.

Only standard differentiable torch ops with shapes known from Python ints, so the module traces (`torch.compile`,
ONNX) like transformers' version.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
)


def multi_scale_deformable_attention(
    value: torch.Tensor,
    value_spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Deformable attention's weighted sum of bilinear samples, same contract as transformers' function.

    Args:
        value: `(batch, sum(h * w), heads, head_dim)` the levels' values, flattened and concatenated.
        value_spatial_shapes: `(h, w)` of each level, in the order of `value`.
        sampling_locations: `(batch, queries, heads, levels, points, 2)` sample positions (x, y) in [0, 1].
        attention_weights: `(batch, queries, heads, levels, points)` weight of each sample.

    Returns:
        `(batch, queries, heads * head_dim)`.
    """
    batch_size, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    # One (x, y) grid row per point and one weight row per point, queries contiguous: the layout grid_sample writes.
    grids = (2 * sampling_locations - 1).permute(0, 2, 3, 4, 1, 5).reshape(
        batch_size * num_heads, num_levels, num_points, 1, num_queries, 2
    )
    weights = attention_weights.permute(0, 2, 3, 4, 1).reshape(
        batch_size * num_heads, num_levels, num_points, 1, 1, num_queries
    )
    values = value.split([height * width for height, width in value_spatial_shapes], dim=1)
    needs_grad = torch.is_grad_enabled() and any(
        tensor.requires_grad for tensor in (value, sampling_locations, attention_weights)
    )
    output = value.new_zeros(batch_size * num_heads, head_dim, 1, num_queries)
    for level, (height, width) in enumerate(value_spatial_shapes):
        level_value = values[level].permute(0, 2, 3, 1).reshape(batch_size * num_heads, head_dim, height, width)
        for point in range(num_points):
            samples = nn.functional.grid_sample(
                level_value, grids[:, level, point], mode="bilinear", padding_mode="zeros", align_corners=False
            )
            if needs_grad:
                output = output + samples * weights[:, level, point]
            else:
                output.addcmul_(samples, weights[:, level, point])
    return output.view(batch_size, num_heads * head_dim, num_queries).transpose(1, 2)


class PosSamMultiscaleDeformableAttention(Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
    """Mask2Former's deformable self-attention (same parameters, same outputs) on [`multi_scale_deformable_attention`].

    The projections and their initialization are transformers'; `forward` differs only in the sampling function and in
    returning the output projection of a transposed view (no `.contiguous()` copy).
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        position_embeddings: torch.Tensor | None = None,
        reference_points: torch.Tensor | None = None,
        spatial_shapes_list: list[tuple[int, int]] | None = None,
        level_start_index: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            hidden_states: `(batch, queries, embed_dim)` queries (the pixel decoder's tokens).
            attention_mask: `(batch, tokens)`, True where a value token is padding (zeroed).
            encoder_hidden_states: `(batch, tokens, embed_dim)` the values' source.
            position_embeddings: `(batch, queries, embed_dim)` added to the queries.
            reference_points: `(batch, queries, levels, 2)` each query's (x, y) in [0, 1] on every level.
            spatial_shapes_list: `(h, w)` of each level.

        Returns:
            `(batch, queries, embed_dim)` outputs and `(batch, queries, heads, levels, points)` attention weights.
        """
        if reference_points is None or reference_points.shape[-1] != 2:
            raise ValueError("PosSamMultiscaleDeformableAttention takes (x, y) reference points, shape (..., levels, 2).")
        queries = self.with_pos_embed(hidden_states, position_embeddings)
        batch_size, num_queries, _ = queries.shape
        sequence_length = encoder_hidden_states.shape[1]
        head_dim = self.d_model // self.n_heads

        value = self.value_proj(encoder_hidden_states)
        if attention_mask is not None:
            value = value.masked_fill(attention_mask[..., None], 0.0)
        value = value.view(batch_size, sequence_length, self.n_heads, head_dim)

        offsets = self.sampling_offsets(queries).view(
            batch_size, num_queries, self.n_heads, self.n_levels, self.n_points, 2
        )
        attention_weights = (
            self.attention_weights(queries)
            .view(batch_size, num_queries, self.n_heads, self.n_levels * self.n_points)
            .softmax(-1)
            .view(batch_size, num_queries, self.n_heads, self.n_levels, self.n_points)
        )
        # Offsets are in pixels of each level: (x / width, y / height).
        level_sizes = torch.tensor(
            [[width, height] for height, width in spatial_shapes_list], dtype=queries.dtype, device=queries.device
        )
        sampling_locations = reference_points[:, :, None, :, None, :] + offsets / level_sizes[None, None, None, :, None, :]

        output = multi_scale_deformable_attention(value, spatial_shapes_list, sampling_locations, attention_weights)
        return self.output_proj(output), attention_weights


class PosSamPixelDecoder(Mask2FormerPixelDecoder):
    """transformers' `Mask2FormerPixelDecoder` whose encoder layers attend with [`PosSamMultiscaleDeformableAttention`].

    Same modules, parameter names and initialization; only the attention's sampling runs differently.
    """

    def __init__(self, config, feature_channels):
        super().__init__(config, feature_channels)
        # The replacements are built on a forked RNG: the random stream, hence every later part of a seeded model, stays
        # exactly as transformers' pixel decoder leaves it (their weights are initialized by `post_init` anyway).
        with torch.random.fork_rng(devices=[]):
            for layer in self.encoder.layers:
                attention = layer.self_attn
                layer.self_attn = PosSamMultiscaleDeformableAttention(
                    attention.d_model, attention.n_heads, attention.n_levels, attention.n_points
                )
