"""The transformer decoder's masked cross-attention on `scaled_dot_product_attention`.

Each of Mask2Former's decoder layers attends from the K = 250 queries to one level of the pixel decoder's features
(up to 16,384 keys at stride 8 for a 1024x1024 input), restricted to each query's predicted mask. transformers' layer
uses `nn.MultiheadAttention` with `need_weights=True` (its default), which rules out the fused kernel: it materializes
the additive mask, the scores, their softmax and the head-averaged weights, each `heads x K x keys` floats (131 MB at
stride 8), and pays for that memory traffic, not for the arithmetic. Nobody reads those weights: the decoder returns
query states and masks only. [`PosSamMaskedCrossAttention`] computes the same attention with
`scaled_dot_product_attention`, which takes one boolean mask shared by all heads and never stores the scores (CPU
flash attention), forward and backward.
"""

from __future__ import annotations

import torch
from torch import nn


class PosSamMaskedCrossAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` (same parameters, same state-dict keys, sequence-first inputs) computed with
    `scaled_dot_product_attention`; it returns no attention weights.

    `attn_mask` follows `nn.MultiheadAttention`'s convention (boolean True = may not attend, or additive floats) and
    may also be `(batch, 1, queries, keys)`, one mask for all heads, which saves repeating it per head.
    """

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        """
        Args:
            query: `(queries, batch, embed_dim)`.
            key, value: `(keys, batch, embed_dim)`.
            attn_mask: `(queries, keys)`, `(batch * heads, queries, keys)`, `(batch, heads, queries, keys)` or
                `(batch, 1, queries, keys)`; boolean True = blocked, or floats added to the scores.

        Returns:
            `((queries, batch, embed_dim), None)`.
        """
        unsupported = key_padding_mask is not None or need_weights or is_causal or self.batch_first
        if unsupported or not self._qkv_same_embed_dim or self.bias_k is not None or self.add_zero_attn:
            raise NotImplementedError(
                "PosSamMaskedCrossAttention computes sequence-first attention with an attention mask only (no key "
                "padding mask, causal mask, attention weights, separate key/value sizes or extra key/value biases)."
            )
        num_queries, batch_size, embed_dim = query.shape
        num_keys = key.shape[0]
        head_dim = embed_dim // self.num_heads
        biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        projected = [
            nn.functional.linear(tensor, weight, bias)
            .view(length, batch_size, self.num_heads, head_dim)
            .permute(1, 2, 0, 3)
            for tensor, length, weight, bias in zip(
                (query, key, value), (num_queries, num_keys, num_keys), self.in_proj_weight.chunk(3), biases
            )
        ]
        mask = None
        if attn_mask is not None:
            if attn_mask.ndim == 3:
                attn_mask = attn_mask.view(batch_size, self.num_heads, num_queries, num_keys)
            # scaled_dot_product_attention's boolean masks say where attention is allowed.
            mask = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask.to(query.dtype)
        attended = nn.functional.scaled_dot_product_attention(
            *projected, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        attended = attended.permute(2, 0, 1, 3).reshape(num_queries, batch_size, embed_dim)
        return self.out_proj(attended), None
