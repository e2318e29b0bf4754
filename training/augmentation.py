"""Large-scale jitter (LSJ) for training and the deterministic resize for evaluation, without torchvision.

LSJ, as in FC-CLIP / Mask2Former's COCO recipe: random horizontal flip; resize so the image fits a square of side
`scale * target_size` (aspect ratio kept, `scale` uniform in [min_scale, max_scale]); then a random
`target_size x target_size` crop, padding at the bottom/right where the resized image is smaller. The image and its
segment-id map go through exactly the same geometry (the map with nearest-neighbour sampling, so ids stay ids);
`valid_mask` marks the pixels that come from the image rather than from padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


@dataclass
class AugmentedExample:
    """An image and its segment-id map after a geometric transform.

    Attributes:
        image: (H, W, 3) uint8.
        segment_ids: (H, W) int64; padding is 0 (void).
        valid_mask: (H, W) bool, True where pixels come from the image (False on padding).
        scale: the sampled LSJ scale (1.0 for the eval transform).
        resized_size: (height, width) of the image after resizing, before crop / pad.
        crop_offset: (top, left) of the crop inside the resized image ((0, 0) when not cropped).
        flipped: whether the example was mirrored horizontally.
    """

    image: np.ndarray
    segment_ids: np.ndarray
    valid_mask: np.ndarray
    scale: float
    resized_size: tuple[int, int]
    crop_offset: tuple[int, int]
    flipped: bool


def _as_arrays(image, segment_ids) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be an RGB PIL image or a (H, W, 3) uint8 array, got {image.dtype} {image.shape}."
        )
    segment_ids = np.asarray(segment_ids)
    if segment_ids.shape != image.shape[:2]:
        raise ValueError(
            f"segment_ids has shape {segment_ids.shape} but the image is {image.shape[0]}x{image.shape[1]} (HxW); "
            "they must have the same height and width."
        )
    if not np.issubdtype(segment_ids.dtype, np.integer):
        raise ValueError(f"segment_ids must be an integer map, got dtype {segment_ids.dtype}.")
    return image, segment_ids.astype(np.int64)


def _resize(image: np.ndarray, segment_ids: np.ndarray, size: tuple[int, int], resample: str):
    """Resizes both to (height, width); the map with nearest sampling (PIL's int32 mode keeps ids exact)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image, segment_ids
    if segment_ids.size and segment_ids.max() >= 2**31:
        raise ValueError(f"Segment ids must be < 2**31, got {segment_ids.max()}.")
    resized_image = np.asarray(Image.fromarray(image).resize((width, height), _RESAMPLE[resample]))
    resized_ids = Image.fromarray(segment_ids.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST)
    return resized_image, np.asarray(resized_ids).astype(np.int64)


def _rng(seed: np.random.Generator | int | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class LargeScaleJitter:
    """Random flip + scale jitter + fixed-size crop/pad, applied identically to an image and its segment-id map.

    Args:
        target_size: side of the square output (1024 in the paper's recipe).
        min_scale, max_scale: range of the resize scale relative to `target_size` (0.1-2.0 in the recipe).
        flip_probability: chance of a horizontal flip.
        image_resample: "bilinear" (default) or "nearest" for the image; the map always uses nearest.
    """

    def __init__(
        self,
        target_size: int = 1024,
        min_scale: float = 0.1,
        max_scale: float = 2.0,
        flip_probability: float = 0.5,
        image_resample: str = "bilinear",
    ):
        if target_size < 1:
            raise ValueError(f"target_size must be >= 1, got {target_size}.")
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"Need 0 < min_scale <= max_scale, got min_scale={min_scale}, max_scale={max_scale}.")
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(f"flip_probability must lie in [0, 1], got {flip_probability}.")
        if image_resample not in _RESAMPLE:
            raise ValueError(f"image_resample must be one of {sorted(_RESAMPLE)}, got {image_resample!r}.")
        self.target_size = target_size
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.flip_probability = flip_probability
        self.image_resample = image_resample

    def __call__(self, image, segment_ids, rng: np.random.Generator | int | None = None) -> AugmentedExample:
        """Augments one example.

        Args:
            image: RGB PIL image or (H, W, 3) uint8 array.
            segment_ids: (H, W) integer segment-id map (0 = void).
            rng: a numpy Generator (advanced in place) or a seed.
        """
        image, segment_ids = _as_arrays(image, segment_ids)
        rng = _rng(rng)
        flipped = bool(rng.random() < self.flip_probability)
        if flipped:
            image, segment_ids = image[:, ::-1], segment_ids[:, ::-1]

        scale = float(rng.uniform(self.min_scale, self.max_scale))
        height, width = segment_ids.shape
        # Fit the image inside a (scale * target)^2 square, keeping its aspect ratio.
        factor = scale * self.target_size / max(height, width)
        resized = (max(1, int(round(height * factor))), max(1, int(round(width * factor))))
        image, segment_ids = _resize(
            np.ascontiguousarray(image), np.ascontiguousarray(segment_ids), resized, self.image_resample
        )

        size = self.target_size
        top = int(rng.integers(0, resized[0] - size + 1)) if resized[0] > size else 0
        left = int(rng.integers(0, resized[1] - size + 1)) if resized[1] > size else 0
        image = image[top : top + size, left : left + size]
        segment_ids = segment_ids[top : top + size, left : left + size]

        out_image = np.zeros((size, size, 3), dtype=np.uint8)
        out_ids = np.zeros((size, size), dtype=np.int64)
        valid = np.zeros((size, size), dtype=bool)
        crop_height, crop_width = segment_ids.shape
        out_image[:crop_height, :crop_width] = image
        out_ids[:crop_height, :crop_width] = segment_ids
        valid[:crop_height, :crop_width] = True
        return AugmentedExample(out_image, out_ids, valid, scale, resized, (top, left), flipped)


def resize_longest_side(
    image, segment_ids, target_size: int = 1024, image_resample: str = "bilinear"
) -> AugmentedExample:
    """Deterministic evaluation transform: resize so the longest side is `target_size`, no flip, no crop, no pad."""
    if target_size < 1:
        raise ValueError(f"target_size must be >= 1, got {target_size}.")
    if image_resample not in _RESAMPLE:
        raise ValueError(f"image_resample must be one of {sorted(_RESAMPLE)}, got {image_resample!r}.")
    image, segment_ids = _as_arrays(image, segment_ids)
    height, width = segment_ids.shape
    factor = target_size / max(height, width)
    resized = (max(1, int(round(height * factor))), max(1, int(round(width * factor))))
    image, segment_ids = _resize(image, segment_ids, resized, image_resample)
    return AugmentedExample(image, segment_ids, np.ones(resized, dtype=bool), 1.0, resized, (0, 0), False)
