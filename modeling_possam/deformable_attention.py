"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch, laid out for the memory traffic of a CPU.

Mask2Former's pixel decoder runs six deformable-attention layers over every pixel of its three levels (21,504 tokens
at 1024x1024). transformers' `multi_scale_deformable_attention` samples each level with one `grid_sample` call, stacks
the levels' samples, multiplies the stack by the attention weights and sums it: it writes and re-reads a
`(batch * heads, head_dim, queries, levels * points)` tensor four times (88 MB per level and layer for PosSAM-B). The
arithmetic is small; the time goes to moving that tensor. Here:

- without autograd (inference), the whole weighted sum is one `embedding_bag` over a channels-last value table
  ([`gather_bilinear_corners`]): each bilinear corner is 32 contiguous floats, read once and accumulated in place,
  and nothing but the output is written — about 6x faster than transformers' function on 2 CPU cores;
- with autograd (training), one `grid_sample` per level and point, its weighted value added to the output right away
  ([`sample_point_by_point`]): nothing is stacked or transposed, and `grid_sample`'s backward, the cost of a training
  step here, is about twice as fast as `embedding_bag`'s.

Both equal transformers' function within 1e-5 (tests). Only standard torch ops with shapes known from Python ints, so
the module traces (`torch.compile`, ONNX) like transformers' version.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
)


# Queries per gather in [`gather_bilinear_corners`]: 2048 keeps its temporaries (indices, weights) at a few MB each.
QUERY_CHUNK_SIZE = 2048


def multi_scale_deformable_attention(
    value: torch.Tensor,
    value_spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Deformable attention's weighted sum of bilinear samples, same contract as transformers' function.

    Without autograd the sum is one fused gather ([`gather_bilinear_corners`]); with autograd it is taken one sampling
    point at a time with `grid_sample` ([`sample_point_by_point`]), whose backward is about twice as fast as the
    gather's.

    Args:
        value: `(batch, sum(h * w), heads, head_dim)` the levels' values, flattened and concatenated.
        value_spatial_shapes: `(h, w)` of each level, in the order of `value`.
        sampling_locations: `(batch, queries, heads, levels, points, 2)` sample positions (x, y) in [0, 1].
        attention_weights: `(batch, queries, heads, levels, points)` weight of each sample.

    Returns:
        `(batch, queries, heads * head_dim)`.
    """
    needs_grad = torch.is_grad_enabled() and any(
        tensor.requires_grad for tensor in (value, sampling_locations, attention_weights)
    )
    function = sample_point_by_point if needs_grad else gather_bilinear_corners
    return function(value, value_spatial_shapes, sampling_locations, attention_weights)


def sample_point_by_point(
    value: torch.Tensor,
    value_spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """[`multi_scale_deformable_attention`] with one `grid_sample` call per level and point; differentiable."""
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
    output = value.new_zeros(batch_size * num_heads, head_dim, 1, num_queries)
    for level, (height, width) in enumerate(value_spatial_shapes):
        level_value = values[level].permute(0, 2, 3, 1).reshape(batch_size * num_heads, head_dim, height, width)
        for point in range(num_points):
            samples = nn.functional.grid_sample(
                level_value, grids[:, level, point], mode="bilinear", padding_mode="zeros", align_corners=False
            )
            output = output + samples * weights[:, level, point]
    return output.view(batch_size, num_heads * head_dim, num_queries).transpose(1, 2)


def gather_bilinear_corners(
    value: torch.Tensor,
    value_spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """[`multi_scale_deformable_attention`] as one `embedding_bag`: a weighted sum of value rows per (query, head).

    Bilinear sampling reads four neighbouring pixels; deformable attention sums `levels * points` such samples, each
    with its attention weight. So a query's output for one head is a weighted sum of `levels * points * 4` rows of a
    `(pixels * heads, head_dim)` value table, with weight (attention weight x bilinear weight): exactly
    `embedding_bag(mode="sum", per_sample_weights=...)`, which reads each row as `head_dim` contiguous values and writes
    only the output. The table is the values in their own token-major layout (row `pixel * heads + head`), each level
    with a one-pixel zero border, and coordinates are clamped onto that border: a corner outside the map then reads a
    zero, as `grid_sample(padding_mode="zeros")` does, without masking weights. Used without autograd:
    `embedding_bag`'s backward to the table is slower than `grid_sample`'s.

    The per-query arithmetic (corner indices and weights) runs on chunks of queries, against constants materialized
    over `(heads, levels, points)`: broadcasting a `(levels, 1, 2)` constant instead makes every elementwise op loop
    over 2 contiguous values at a time, about 20x slower on these chunks, and it cost more than the gather itself.
    """
    batch_size, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    device = value.device
    # The table: each level with a zero border, then spare zero pixels that the right and lower neighbours of the last
    # level's border pixels may index (always with weight 0). Zero-filled whole, then the interiors copied: zeroing
    # only the borders is no faster here, and under torch.compile each in-place write to a view became a copy of the
    # whole table (the compiled gather took 80 ms against 51 ms).
    bordered_sizes = [(height + 2) * (width + 2) for height, width in value_spatial_shapes]
    table_pixels = sum(bordered_sizes) + max(width for _, width in value_spatial_shapes) + 3
    table = value.new_zeros(batch_size, table_pixels, num_heads, head_dim)
    level_starts = [0]
    levels = value.split([height * width for height, width in value_spatial_shapes], dim=1)
    for (height, width), level_value, size in zip(value_spatial_shapes, levels, bordered_sizes):
        bordered = table[:, level_starts[-1] : level_starts[-1] + size].view(batch_size, height + 2, width + 2, -1)
        bordered[:, 1:-1, 1:-1] = level_value.reshape(batch_size, height, width, -1)
        level_starts.append(level_starts[-1] + size)
    # int32 indices halve the index arithmetic's memory traffic; int64 where the table has 2^31 rows or more, and under
    # torch.export, which cannot bound a dynamic batch size while tracing.
    image_rows = table_pixels * num_heads
    index_dtype = torch.long if torch.compiler.is_exporting() or batch_size * image_rows >= 2**31 else torch.int32

    def per_sample(values, dtype):  # `(levels,)` or `(levels, 2)` -> broadcast over (heads, levels, points[, 2])
        values = torch.tensor(values, dtype=dtype, device=device)
        shape = (num_heads, num_levels, num_points) + values.shape[1:]
        return values[None, :, None].expand(shape).contiguous()

    sizes = per_sample([[width, height] for height, width in value_spatial_shapes], torch.float32)
    half, border_coordinates = torch.tensor(0.5, device=device), sizes + 1
    row_steps = per_sample([(width + 2) * num_heads for _, width in value_spatial_shapes], index_dtype)
    # Row of (batch, level, head)'s top-left pixel: (batch * table_pixels + level start) * heads + head.
    first_rows = (
        per_sample([start * num_heads for start in level_starts[:-1]], index_dtype)
        + torch.arange(num_heads, dtype=index_dtype, device=device)[:, None, None]
        + torch.arange(0, batch_size * image_rows, image_rows, dtype=index_dtype, device=device)[:, None, None, None, None]
    )  # (batch, 1, heads, levels, points)
    samples_per_bag = 4 * num_levels * num_points

    table = table.view(-1, head_dim)
    output = value.new_empty(batch_size, num_queries, num_heads * head_dim)
    for start in range(0, num_queries, QUERY_CHUNK_SIZE):
        chunk = slice(start, start + QUERY_CHUNK_SIZE)
        # Pixel coordinates in the bordered map (align_corners=False: x * width - 0.5, plus 1 for the border), clamped
        # to the border: a point entirely outside the map then has all its weight on border pixels.
        coordinates = torch.addcmul(half, sampling_locations[:, chunk].float(), sizes)
        coordinates = torch.minimum(coordinates.clamp_(min=0), border_coordinates, out=coordinates)
        corners = coordinates.floor()
        fraction_x, fraction_y = coordinates.sub_(corners).unbind(-1)
        # A NaN location (clamping keeps it) keeps NaN weights, so its output is NaN as with grid_sample, but must not
        # become an out-of-range index.
        corner_x, corner_y = corners.nan_to_num_(0).to(index_dtype).unbind(-1)
        top_left = corner_y * row_steps
        top_left.add_(corner_x, alpha=num_heads).add_(first_rows)
        below = top_left + row_steps
        # A query's bag holds its (corner, level, point) samples, corner outermost: top-left, top-right (+1 pixel =
        # +heads rows), bottom-left (+1 bordered row), bottom-right. Each corner's indices and weights are computed whole
        # and then stacked; writing them into the interleaved layout directly ran 12-value loops, several times slower.
        indices = torch.stack((top_left, top_left + num_heads, below, below + num_heads), dim=3)
        weights = attention_weights[:, chunk].float()
        lower = weights * fraction_y
        upper = weights - lower
        right_lower, right_upper = lower * fraction_x, upper * fraction_x
        corner_weights = torch.stack((upper - right_upper, right_upper, lower - right_lower, right_lower), dim=3)
        samples = nn.functional.embedding_bag(
            indices.view(-1, samples_per_bag),
            table,
            per_sample_weights=corner_weights.view(-1, samples_per_bag).to(value.dtype),
            mode="sum",
        )
        output[:, chunk] = samples.view(batch_size, -1, num_heads * head_dim)
    return output


class PosSamMultiscaleDeformableAttention(Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
    """Mask2Former's deformable self-attention (same parameters, same outputs) on [`multi_scale_deformable_attention`].

    The projections and their initialization are transformers'; `forward` differs only in the sampling function, in
    returning the output projection of a transposed view (no `.contiguous()` copy), and, without autograd, in masking
    the values, taking the softmax and turning offsets into sampling locations in place (same values).
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

        # Without autograd the fresh projections are updated in place: each avoids a new 16-22 MB tensor per layer
        # (PosSAM-B), whose first touch costs page faults, not arithmetic.
        in_place = not torch.is_grad_enabled()
        value = self.value_proj(encoder_hidden_states)
        if attention_mask is not None:
            padding = attention_mask[..., None]
            value = value.masked_fill_(padding, 0.0) if in_place else value.masked_fill(padding, 0.0)
        value = value.view(batch_size, sequence_length, self.n_heads, head_dim)

        offsets = self.sampling_offsets(queries).view(
            batch_size, num_queries, self.n_heads, self.n_levels, self.n_points, 2
        )
        logits = self.attention_weights(queries).view(batch_size, num_queries, self.n_heads, -1)
        if in_place:
            # The softmax over 12 values per head, written out: `softmax` runs its 12-value rows about 5x slower than
            # these four ops over the whole tensor (same values within 1e-7; NaN and infinite rows come out the same).
            attention_weights = logits.sub_(logits.amax(-1, keepdim=True)).exp_()
            attention_weights = attention_weights.div_(attention_weights.sum(-1, keepdim=True))
        else:
            attention_weights = logits.softmax(-1)
        attention_weights = attention_weights.view(batch_size, num_queries, self.n_heads, self.n_levels, self.n_points)
        # Offsets are in pixels of each level: (x / width, y / height).
        level_sizes = torch.tensor(
            [[width, height] for height, width in spatial_shapes_list], dtype=queries.dtype, device=queries.device
        )
        level_sizes, references = level_sizes[None, None, None, :, None, :], reference_points[:, :, None, :, None, :]
        if in_place:
            # Both constants are materialized over the dimensions they broadcast along, as far as is cheap (sizes over
            # heads and points, references over points): broadcasting a `(..., levels, 1, 2)` shape runs loops over 2
            # contiguous values, several times slower than the same op on 24 or 192.
            per_head = (self.n_heads, self.n_levels, self.n_points, 2)
            level_sizes = level_sizes[0, 0].expand(per_head).contiguous()
            references = references.expand(batch_size, num_queries, 1, *per_head[1:]).contiguous()
            sampling_locations = offsets.div_(level_sizes).add_(references)
        else:
            sampling_locations = references + offsets / level_sizes

        output = multi_scale_deformable_attention(value, spatial_shapes_list, sampling_locations, attention_weights)
        return self.output_proj(output), attention_weights
