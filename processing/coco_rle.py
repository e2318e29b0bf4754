"""Segments as COCO run-length encodings (`return_coco_annotation=True` of the post-processing methods).

COCO's result files and `pycocotools` store a mask as `{"size": [height, width], "counts": str}`: column-major run
lengths, compressed to a string. Encoding uses `pycocotools.mask.encode`, so `pycocotools.mask.decode` (and COCO's
evaluation tools) read the result back exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as coco_mask


def encode_masks(masks: torch.Tensor) -> list[dict]:
    """`(N, H, W)` boolean masks -> N COCO RLEs `{"size": [H, W], "counts": str}`."""
    if masks.shape[0] == 0:
        return []
    fortran = np.asfortranarray(masks.detach().cpu().numpy().astype(np.uint8).transpose(1, 2, 0))
    encoded = coco_mask.encode(fortran)
    for rle in encoded:
        rle["counts"] = rle["counts"].decode("ascii")
    return encoded


def encode_segments(segmentation: torch.Tensor, segments_info: list[dict]) -> list[dict]:
    """An (H, W) map of segment ids -> one COCO RLE per entry of `segments_info`, in its order."""
    ids = torch.tensor([segment["id"] for segment in segments_info], dtype=segmentation.dtype, device=segmentation.device)
    return encode_masks(segmentation[None] == ids[:, None, None])
