"""Reading user images into RGB arrays, with errors that say what was expected.

Accepted per image: a PIL image (transparency is composited onto white, as transformers does; 16-bit grayscale is
scaled by its bit depth, 0-65535 -> 0-255; 32-bit integer and float modes are range-checked like arrays rather than
clipped), a path to an image file, or a numpy array / torch
tensor of shape (H, W), (H, W, C) or (C, H, W) with C in {1, 3, 4}: uint8, other integers in [0, 255], or floats in
[0, 1] or [0, 255] (a float image whose maximum is <= 1 is read as [0, 1]). A layout that fits both (H, W, C) and
(C, H, W) is read as (H, W, C) for numpy arrays and (C, H, W) for tensors, each library's own convention. A batch is a
list or tuple of images, or a 4-D array / tensor.
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch


CHANNELS = (1, 3, 4)
# PIL modes of 16-bit grayscale images: scaled by 255 / 65535, never judged by their values.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) in 0-255 -> (H, W, 3): alpha-blend onto a white background."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)


def _from_pil(image: PIL.Image.Image, where: str) -> np.ndarray:
    if image.mode in SIXTEEN_BIT_MODES:
        # 16-bit grayscale (PNG, TIFF): the file says its bit depth, so scale by it, whatever the values are.
        gray = np.asarray(image).astype(np.float32) * (255.0 / 65535.0)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "F" or image.mode.startswith("I"):
        # 32-bit integer and float images: PIL's RGB conversion would clip them silently; check their range.
        return _from_array(np.array(image), channels_first=False, where=where)
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        image = image.convert("RGBA")
        background = PIL.Image.new("RGBA", image.size, (255, 255, 255, 255))
        return np.array(PIL.Image.alpha_composite(background, image).convert("RGB"))
    return np.array(image.convert("RGB"))


def _from_path(path, where: str) -> np.ndarray:
    try:
        with PIL.Image.open(path) as image:
            image.load()
            # Photos store their orientation in EXIF; apply it so masks line up with what the user sees.
            image = PIL.ImageOps.exif_transpose(image)
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"{where}: cannot read image file {os.fspath(path)!r}: {error}") from None
    try:
        return _from_pil(image, where)
    except ValueError as error:  # already names `where`; add the file
        raise ValueError(f"{error} (file {os.fspath(path)!r})") from None


def _from_array(array: np.ndarray, channels_first: bool, where: str) -> np.ndarray:
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3:
        first, last = array.shape[0] in CHANNELS, array.shape[-1] in CHANNELS
        if first and (channels_first or not last):
            array = np.moveaxis(array, 0, -1)
        elif not last:
            raise ValueError(
                f"{where}: expected an image of shape (H, W), (H, W, C) or (C, H, W) with C in {CHANNELS}, got shape "
                f"{tuple(array.shape)}."
            )
    else:
        raise ValueError(
            f"{where}: expected an image with 2 or 3 dimensions ((H, W), (H, W, C) or (C, H, W)), got shape "
            f"{tuple(array.shape)}."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{where}: the image is empty (shape {tuple(array.shape)}).")

    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(f"{where}: expected uint8, integer or float pixel values, got dtype {array.dtype}.")
    else:
        low, high = float(array.min()), float(array.max())
        if not np.isfinite(low) or not np.isfinite(high):
            raise ValueError(f"{where}: the image contains NaN or infinite values.")
        if low < 0 or high > 255:
            raise ValueError(
                f"{where}: pixel values must be in [0, 1] or [0, 255], got range [{low:g}, {high:g}] "
                f"(dtype {array.dtype})."
            )
        if np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.uint8)
        else:
            array = array.astype(np.float32) * (255.0 if high <= 1.0 else 1.0)

    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        blended = _composite_on_white(array)
        array = np.round(blended).astype(np.uint8) if array.dtype == np.uint8 else blended
    return array


def load_image(image, where: str = "image") -> np.ndarray:
    """One image -> (H, W, 3) array, uint8 when the input was 8-bit (then resizing matches PIL exactly), float32 in
    [0, 255] otherwise."""
    if isinstance(image, PIL.Image.Image):
        return _from_pil(image, where)
    if isinstance(image, (str, os.PathLike)):
        return _from_path(image, where)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        # numpy has no bfloat16; half precision is widened too so range checks and resizing run in float32.
        image = image.float() if image.dtype in (torch.float16, torch.bfloat16) else image
        return _from_array(image.numpy(), channels_first=True, where=where)
    if isinstance(image, np.ndarray):
        return _from_array(image, channels_first=False, where=where)
    raise TypeError(
        f"{where}: expected a PIL image, a file path, a numpy array or a torch tensor, got {type(image).__name__}."
    )


def as_image_list(images) -> list:
    """Splits the accepted batch forms (single image, list/tuple, 4-D array or tensor) into a list of images."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("images is an empty list: give at least one image.")
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch (first dimension 0): give at least one image.")
        return list(images)
    if images is None:
        raise ValueError("images is None: give an image or a list of images.")
    return [images]
