"""Masked-attention transformer decoder: Mask2Former's, driven so that no mask is computed at a size nobody uses.

The modules (query embeddings, level embeddings, decoder layers, the mask MLP) are transformers' own
`Mask2FormerTransformerModule`; only the loop over its layers is PosSAM's, and each layer's cross-attention is
[`PosSamMaskedCrossAttention`] (same parameters, `scaled_dot_product_attention` with one mask for all heads). Mask2Former predicts a full-resolution
(stride 4) mask after every layer and resizes it to the next layer's key resolution (stride 32, 16 or 8) to build that
layer's attention mask. A mask is a dot product of a query embedding with the per-pixel `mask_features`, and bilinear
resizing is linear, so resizing the features before the dot product gives the same low-resolution mask as resizing
the full mask afterwards ([`ResizedMaskFeatures`]). Attention masks are always computed that way; full-resolution
masks are computed only where they are used: every prediction in training (deep supervision), the last one at
inference, which removes 9 of the 10 full-resolution `K x 256 x 256` products.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import Mask2FormerTransformerModule

from .masked_attention import PosSamMaskedCrossAttention
from .outputs import PosSamDecoderOutput


def mask_logits(mask_embeddings: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
    """`(batch, K, C)` query mask embeddings and `(batch, C, h, w)` features -> `(batch, K, h, w)` mask logits."""
    return torch.einsum("bqc,bchw->bqhw", mask_embeddings, mask_features)


class ResizedMaskFeatures:
    """Low-resolution mask logits without gradient, from `mask_features` resized once per size.

    Equal (up to rounding) to bilinearly resizing the full-resolution masks, at a fraction of the cost: the C feature
    channels are resized once for all predictions instead of K masks per prediction. Used for the masked attention's
    masks and for pooling CLIP's stride-32 features, both of which carry no gradient.
    """

    def __init__(self, mask_features: torch.Tensor):
        self.mask_features = mask_features.detach()
        self._resized: dict[tuple[int, int], torch.Tensor] = {}

    def mask_logits(self, mask_embeddings: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        size = tuple(size)
        if size not in self._resized:
            features = self.mask_features
            if tuple(features.shape[-2:]) != size:
                features = nn.functional.interpolate(features, size=size, mode="bilinear", align_corners=False)
            self._resized[size] = features
        return mask_logits(mask_embeddings.detach(), self._resized[size])


class PosSamTransformerDecoder(Mask2FormerTransformerModule):
    """Mask2Former's masked-attention decoder and mask head; returns every prediction's query states and masks."""

    def __init__(self, in_features: int, config):
        super().__init__(in_features=in_features, config=config)
        for layer in self.decoder.layers:
            stock = layer.cross_attn
            # Built on a forked RNG and given the stock module's weights: a seeded model initializes exactly as with
            # transformers' layers.
            with torch.random.fork_rng(devices=[]):
                layer.cross_attn = PosSamMaskedCrossAttention(stock.embed_dim, stock.num_heads, stock.dropout)
            layer.cross_attn.load_state_dict(stock.state_dict())

    def forward(
        self,
        multi_scale_features: tuple[torch.Tensor, ...],
        mask_features: torch.Tensor,
        full_resolution_masks: bool = True,
    ) -> PosSamDecoderOutput:
        """
        Args:
            multi_scale_features: the pixel decoder's three maps, lowest resolution first (strides 32, 16, 8), each
                `(batch, hidden_dim, h, w)`; the decoder layers attend to them round-robin.
            mask_features: `(batch, mask_feature_size, H/4, W/4)` per-pixel embeddings masks are predicted from.
            full_resolution_masks: predict every intermediate mask at stride 4 (training, deep supervision); if
                `False`, only the last prediction is full resolution.
        """
        # Embedding tables are read by calling them, not through `.weight`: a model dispatched with offloading
        # (`device_map`) loads a module's weights to the execution device only when the module is called.
        device = mask_features.device
        level_embeddings = self.level_embed(torch.arange(self.num_feature_levels, device=device))
        query_indices = torch.arange(self.queries_features.num_embeddings, device=device)
        keys, key_positions, key_sizes = [], [], []
        for level, features in enumerate(multi_scale_features[: self.num_feature_levels]):
            key_sizes.append(tuple(features.shape[-2:]))
            position = self.position_embedder(features.shape, features.device, features.dtype, None)
            key_positions.append(position.flatten(2).permute(2, 0, 1))
            # Contiguous sequence-first, the layout of the position embeddings: each layer adds the two and projects
            # them, and with one of them transposed the add alone took 20 ms per stride-8 layer (against 2 ms).
            keys.append(
                (self.input_projections[level](features).flatten(2) + level_embeddings[level][None, :, None])
                .permute(2, 0, 1)
                .contiguous()
            )

        batch_size = mask_features.shape[0]
        # The decoder layers take sequence-first tensors: (num_queries, batch, hidden_dim).
        query_positions = self.queries_embedder(query_indices).unsqueeze(1).expand(-1, batch_size, -1)
        hidden_states = self.queries_features(query_indices).unsqueeze(1).expand(-1, batch_size, -1)

        decoder = self.decoder
        num_predictions = len(decoder.layers) + 1
        low_resolution = ResizedMaskFeatures(mask_features)
        query_states, mask_embeddings, masks = [], [], []
        attention_mask = None
        for index in range(num_predictions):
            if index > 0:
                layer = decoder.layers[index - 1]
                hidden_states = layer(
                    hidden_states,
                    (index - 1) % self.num_feature_levels,
                    None,
                    key_positions,
                    query_positions,
                    keys,
                    encoder_attention_mask=attention_mask,
                )[0]

            state = decoder.layernorm(hidden_states).transpose(0, 1)
            embeddings = decoder.mask_predictor.mask_embedder(state)
            is_last = index == num_predictions - 1
            query_states.append(state)
            mask_embeddings.append(embeddings)
            masks.append(mask_logits(embeddings, mask_features) if full_resolution_masks or is_last else None)
            if not is_last:
                key_size = key_sizes[index % self.num_feature_levels]
                attention_mask = self._attention_mask(low_resolution.mask_logits(embeddings, key_size))

        return PosSamDecoderOutput(
            mask_features=mask_features,
            query_states=tuple(query_states),
            mask_embeddings=tuple(mask_embeddings),
            masks_queries_logits=tuple(masks),
        )

    def _attention_mask(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """`(batch, K, h, w)` logits -> `(batch, 1, K, h * w)` boolean mask for all heads, True = may not attend.

        A query attends only where its mask is foreground (sigmoid >= 0.5, i.e. logit >= 0). A query whose mask is
        empty at this resolution would attend to nothing, so it attends everywhere instead.
        """
        blocked = (mask_logits < 0).flatten(2)
        return (blocked & ~blocked.all(dim=-1, keepdim=True))[:, None]
