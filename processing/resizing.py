"""Geometry shared by pre- and post-processing: SAM's longest-edge resize and the way masks go back to the image.

Pre-processing resizes an image of size (H, W) so that its longest edge is S, then pads it bottom/right to S x S.
Post-processing must undo exactly that: upsample the stride-4 mask logits to the padded S x S input, crop the padding
(the resized image occupies the top-left (h', w') corner), then resize to (H, W). All three steps are bilinear
(`align_corners=False`) and separable: rows and columns can be resized one after the other. Along the rows the
composition is one sparse (H x h) matrix, so the masks can be produced band of rows by band of rows, with the same
values as the three `interpolate` calls but never materializing K masks at S x S (1 GB for 250 queries at 1024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def longest_edge_resize_shape(height: int, width: int, longest_edge: int) -> tuple[int, int]:
    """The (height, width) an image gets when its longest edge is resized to `longest_edge` (SAM's rounding)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"Image size must be positive, got (height, width) = ({height}, {width}).")
    scale = longest_edge / max(height, width)
    # At least one pixel: SAM's rounding alone sends a very thin image (1 x 900 to 128) to zero rows.
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def bilinear_matrix(in_size: int, out_size: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The (out_size, in_size) matrix of 1-D bilinear resizing, with `interpolate`'s own weights.

    Built by resizing the identity, so `R @ x` equals `F.interpolate(x, out_size, mode="linear", align_corners=False)`
    on the first axis of x (no antialiasing, like `F.interpolate(mode="bilinear")`).
    """
    identity = torch.eye(in_size, dtype=dtype, device=device)[:, None, :, None]
    return F.interpolate(identity, size=(out_size, 1), mode="bilinear", align_corners=False)[:, 0, :, 0].T


def mask_to_image_matrix(
    mask_length: int,
    padded_size: int,
    valid_length: int,
    target_length: int,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """The (target_length, mask_length) matrix taking stride-4 mask logits to the original image along one axis.

    Args:
        mask_length: h (or w) of the mask logits, the padded input at stride 4.
        padded_size: S, the side of the padded square input the masks were predicted on.
        valid_length: h' (or w'), the resized image inside the padded input (it starts at index 0).
        target_length: H (or W) of the output.

    Returns:
        `A` such that `A @ logits` equals upsampling `logits` to S, keeping the first h' values and resizing them to
        H, all with `interpolate`'s linear weights.
    """
    if not 0 < valid_length <= padded_size:
        raise ValueError(
            f"The resized image length {valid_length} does not fit in the padded input of side {padded_size}."
        )
    upsample = bilinear_matrix(mask_length, padded_size, dtype, device)[:valid_length]
    if valid_length == target_length:
        return upsample
    return bilinear_matrix(valid_length, target_length, dtype, device) @ upsample


def nearest_indices(in_size: int, out_size: int):
    """Source index of each output pixel for nearest-neighbour resizing (pixel centres, as PIL's NEAREST)."""
    scale = in_size / out_size
    indices = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale).floor().long()
    return indices.clamp_(max=in_size - 1)
