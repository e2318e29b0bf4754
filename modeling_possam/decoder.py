"""Masked-attention transformer decoder: Mask2Former's, driven so that inference computes no unused mask.

The modules (query embeddings, level embeddings, decoder layers, the mask MLP) are transformers' own
`Mask2FormerTransformerModule`; only the loop over its layers is PosSAM's. Mask2Former predicts a full-resolution
(stride 4) mask after every layer, but an intermediate mask is only used to build the next layer's attention mask, at
that layer's key resolution (stride 32, 16 or 8). A mask is a dot product of a query embedding with the per-pixel
`mask_features`, and bilinear resizing is linear, so resizing the features before the dot product gives the same
low-resolution mask as resizing the full mask afterwards. At inference the intermediate masks are computed that way,
which removes 9 of the 10 full-resolution `K x 256 x 256` products; training keeps every full mask for deep
supervision.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import Mask2FormerTransformerModule

from .outputs import PosSamDecoderOutput


def _resize(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return nn.functional.interpolate(features, size=size, mode="bilinear", align_corners=False)


class PosSamTransformerDecoder(Mask2FormerTransformerModule):
    """Mask2Former's masked-attention decoder and mask head; returns every prediction's query states and masks."""

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
        keys, key_positions, key_sizes = [], [], []
        for level, features in enumerate(multi_scale_features[: self.num_feature_levels]):
            key_sizes.append(tuple(features.shape[-2:]))
            position = self.position_embedder(features.shape, features.device, features.dtype, None)
            key_positions.append(position.flatten(2).permute(2, 0, 1))
            keys.append(
                (self.input_projections[level](features).flatten(2) + self.level_embed.weight[level][None, :, None])
                .permute(2, 0, 1)
            )

        batch_size = mask_features.shape[0]
        # The decoder layers take sequence-first tensors: (num_queries, batch, hidden_dim).
        query_positions = self.queries_embedder.weight.unsqueeze(1).expand(-1, batch_size, -1)
        hidden_states = self.queries_features.weight.unsqueeze(1).expand(-1, batch_size, -1)

        decoder = self.decoder
        num_predictions = len(decoder.layers) + 1
        features_at_key_size: dict[tuple[int, int], torch.Tensor] = {}
        query_states, masks = [], []
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
            mask_embeddings = decoder.mask_predictor.mask_embedder(state)
            is_last = index == num_predictions - 1
            full_mask = None
            if full_resolution_masks or is_last:
                full_mask = torch.einsum("bqc,bchw->bqhw", mask_embeddings, mask_features)
            query_states.append(state)
            masks.append(full_mask)
            if is_last:
                break

            key_size = key_sizes[index % self.num_feature_levels]
            if full_mask is not None:
                attention_logits = _resize(full_mask, key_size)
            else:
                if key_size not in features_at_key_size:
                    features_at_key_size[key_size] = _resize(mask_features, key_size)
                attention_logits = torch.einsum("bqc,bchw->bqhw", mask_embeddings, features_at_key_size[key_size])
            attention_mask = self._attention_mask(attention_logits.detach())

        return PosSamDecoderOutput(
            mask_features=mask_features, query_states=tuple(query_states), masks_queries_logits=tuple(masks)
        )

    def _attention_mask(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """`(batch, K, h, w)` logits -> `(batch * heads, K, h * w)` boolean mask, True = may not attend.

        A query attends only where its mask is foreground (sigmoid >= 0.5, i.e. logit >= 0). A query whose mask is
        empty at this resolution would attend to nothing, so it attends everywhere instead.
        """
        blocked = (mask_logits < 0).flatten(2)
        blocked = blocked & ~blocked.all(dim=-1, keepdim=True)
        return blocked.repeat_interleave(self.decoder.mask_predictor.num_heads, dim=0)
