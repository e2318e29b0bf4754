"""SAM's promptable decoder inside PosSAM: points and boxes -> masks, from the same SAM image embedding.

PosSAM already runs SAM's image encoder on every image; its neck output (`PosSamImageFeatures.sam_image_embeddings`)
is exactly what SAM's own prompt encoder and two-way mask decoder consume. Both are transformers' modules
(`SamPromptEncoder`, `SamMaskDecoder`), imported and frozen, with the weights of the SAM checkpoint PosSAM was built
from; this module only wires them as `SamModel` does, so a click costs the mask decoder alone (milliseconds), never
the image encoder.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.sam.modeling_sam import SamMaskDecoder, SamPromptEncoder

from .configuration import PosSamConfig


class PosSamPromptDecoder(nn.Module):
    """SAM's prompt encoder + mask decoder. Parameter names follow transformers' `SamModel` (`prompt_encoder.*`,
    `mask_decoder.*`); SamModel's `shared_image_embedding` is the prompt encoder's own `shared_embedding` here (the
    two are one tied tensor in SamModel)."""

    def __init__(self, config: PosSamConfig):
        super().__init__()
        sam_config = config.to_sam_config()
        # The mask decoder is not a PreTrainedModel: it reads the attention implementation from its config.
        sam_config.mask_decoder_config._attn_implementation = config._attn_implementation
        self.prompt_encoder = SamPromptEncoder(sam_config)
        self.mask_decoder = SamMaskDecoder(sam_config.mask_decoder_config)
        self.image_embedding_size = sam_config.prompt_encoder_config.image_embedding_size

    def image_positional_embeddings(self) -> torch.Tensor:
        """`(1, C, h, w)` SAM's dense positional encoding of the image embedding grid (pixel centers in [0, 1])."""
        size = self.image_embedding_size
        positional = self.prompt_encoder.shared_embedding.positional_embedding
        centers = (torch.arange(size, device=positional.device, dtype=positional.dtype) + 0.5) / size
        grid = torch.stack(torch.meshgrid(centers, centers, indexing="xy"), dim=-1)
        return self.prompt_encoder.shared_embedding(grid[None]).permute(0, 3, 1, 2)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            image_embeddings: `(batch, C, h, w)` SAM's neck output (h = w = image_size / 16).
            input_points: `(batch, num_prompts, points_per_prompt, 2)` (x, y) in the padded model input's pixels.
            input_labels: `(batch, num_prompts, points_per_prompt)` 1 foreground, 0 background, -10 padding.
            input_boxes: `(batch, num_prompts, 4)` (x0, y0, x1, y1) in the padded model input's pixels; with points,
                prompt p combines box p and the points of prompt p.
            multimask_output: three candidate masks per prompt (SAM's answer to ambiguous clicks) instead of one.

        Returns:
            `(batch, num_prompts, num_masks, 4h, 4w)` mask logits (stride 4 of the model input) and
            `(batch, num_prompts, num_masks)` SAM's predicted IoU of each mask.
        """
        sparse, dense = self.prompt_encoder(
            input_points=input_points, input_labels=input_labels, input_boxes=input_boxes, input_masks=None
        )
        batch_size = image_embeddings.shape[0]
        positional = self.image_positional_embeddings().to(image_embeddings.dtype).expand(batch_size, -1, -1, -1)
        return self.mask_decoder(
            image_embeddings=image_embeddings,
            image_positional_embeddings=positional,
            sparse_prompt_embeddings=sparse.to(image_embeddings.dtype),
            dense_prompt_embeddings=dense.to(image_embeddings.dtype),
            multimask_output=multimask_output,
        )
