"""Per-segment training targets (binary masks + class ids) from a panoptic segment-id map.

As in Mask2Former / FC-CLIP training on COCO panoptic: every non-crowd segment, thing or stuff, is one target;
crowd segments are not targets (their pixels then count as background for the mask losses). Segments that no
longer occur in the map (e.g. cropped away by large-scale jitter) are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


def panoptic_targets(
    segment_ids, segments_info: Sequence[Mapping], include_crowd: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Builds the mask and class targets of one image.

    Args:
        segment_ids: (H, W) integer map (0 = void / padding).
        segments_info: `[{"id", "label_id", "iscrowd"}]`.
        include_crowd: also return crowd segments as targets.

    Returns:
        `mask_labels`: (N, H, W) float32 {0, 1} masks; `class_labels`: (N,) int64 label ids, in segments_info order.
    """
    segment_ids = np.asarray(segment_ids.cpu() if hasattr(segment_ids, "cpu") else segment_ids)
    if segment_ids.ndim != 2:
        raise ValueError(f"segment_ids must be an (H, W) map, got shape {segment_ids.shape}.")
    masks, labels = [], []
    for segment in segments_info:
        if int(segment.get("iscrowd", 0)) == 1 and not include_crowd:
            continue
        mask = segment_ids == int(segment["id"])
        if not mask.any():
            continue
        masks.append(mask)
        labels.append(int(segment["label_id"]))
    height, width = segment_ids.shape
    if not masks:
        return torch.zeros((0, height, width), dtype=torch.float32), torch.zeros((0,), dtype=torch.int64)
    return torch.from_numpy(np.stack(masks)).to(torch.float32), torch.tensor(labels, dtype=torch.int64)
