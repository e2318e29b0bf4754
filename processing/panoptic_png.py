"""COCO panoptic PNG encoding: a segment id is stored in a pixel's colour as `id = R + 256 * G + 256**2 * B`.

Id 0 (black) means void / unlabeled. Ids therefore range over 0..256**3 - 1.
"""

from __future__ import annotations

import numpy as np


MAX_SEGMENT_ID = 256**3 - 1


def rgb_to_segment_ids(rgb: np.ndarray) -> np.ndarray:
    """Decodes an (H, W, 3) uint8 panoptic PNG array into an (H, W) int64 segment-id map."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"A panoptic PNG must be an RGB array of shape (H, W, 3), got shape {rgb.shape}.")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def segment_ids_to_rgb(segment_ids: np.ndarray) -> np.ndarray:
    """Encodes an (H, W) integer segment-id map as an (H, W, 3) uint8 array to write as a panoptic PNG."""
    segment_ids = np.asarray(segment_ids)
    if segment_ids.ndim != 2:
        raise ValueError(f"A segment-id map must have shape (H, W), got shape {segment_ids.shape}.")
    if not np.issubdtype(segment_ids.dtype, np.integer):
        raise ValueError(f"Segment ids must be integers, got dtype {segment_ids.dtype}.")
    if segment_ids.size and (segment_ids.min() < 0 or segment_ids.max() > MAX_SEGMENT_ID):
        raise ValueError(
            f"Segment ids must lie in [0, {MAX_SEGMENT_ID}] to fit a panoptic PNG, got "
            f"[{segment_ids.min()}, {segment_ids.max()}]."
        )
    segment_ids = segment_ids.astype(np.int64)
    return np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536], axis=-1).astype(np.uint8)


def segment_area_and_bbox(mask: np.ndarray) -> tuple[int, list[int]]:
    """Area and COCO bbox `[x, y, width, height]` of a non-empty boolean (H, W) mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("Cannot compute the bbox of an empty mask.")
    bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
    return int(mask.sum()), bbox
