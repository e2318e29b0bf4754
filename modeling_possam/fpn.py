"""Simple feature pyramid: four levels (strides 4, 8, 16, 32) from SAM's single stride-16 map.

SAM's ViT produces one stride-16 map, but the Mask2Former pixel decoder needs a pyramid. Following ViTDet, the pyramid
is built from that map alone: transposed convolutions upsample it to strides 8 and 4, max-pooling downsamples it to
stride 32, and each level is projected to a common width by a 1x1 and a 3x3 convolution, each followed by LayerNorm.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.sam.modeling_sam import SamLayerNorm


class _ChannelNorm(SamLayerNorm):
    """LayerNorm over the channels of a `(batch, channels, H, W)` map, returned contiguous when autograd records.

    `SamLayerNorm` returns a permuted view with channels-last strides, and oneDNN's backward of the 3x3 convolution that
    follows is about 3x slower on such a tensor (256 channels at 256x256 on 2 CPU cores: 4.3 s against 1.4 s), which
    alone cost a tenth of a PosSAM-B training step. Without a backward the copy is pure cost: the convolutions' forward
    takes the channels-last view as is, and the PosSAM-B pyramid takes about half the time without the copies.
    """

    def __init__(self, channels: int):
        super().__init__(channels, data_format="channels_first")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normalized = super().forward(features)
        return normalized.contiguous() if torch.is_grad_enabled() else normalized


class PosSamFeaturePyramid(nn.Module):
    """`(batch, in_channels, H/16, W/16)` -> four maps `(batch, out_channels, H/s, W/s)` for s = 4, 8, 16, 32."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half, quarter = in_channels // 2, in_channels // 4
        self.rescale = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(in_channels, half, kernel_size=2, stride=2),
                    _ChannelNorm(half),
                    nn.GELU(),
                    nn.ConvTranspose2d(half, quarter, kernel_size=2, stride=2),
                ),
                nn.ConvTranspose2d(in_channels, half, kernel_size=2, stride=2),
                nn.Identity(),
                nn.MaxPool2d(kernel_size=2, stride=2),
            ]
        )
        self.project = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(channels, out_channels, kernel_size=1, bias=False),
                    _ChannelNorm(out_channels),
                    nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
                    _ChannelNorm(out_channels),
                )
                for channels in (quarter, half, in_channels, in_channels)
            ]
        )

    def forward(self, sam_image_embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(project(rescale(sam_image_embeddings)) for rescale, project in zip(self.rescale, self.project))
