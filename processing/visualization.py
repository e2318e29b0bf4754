"""Pictures of segmentations: a colour overlay of the segments with their label text."""

from __future__ import annotations

import colorsys
import functools
import hashlib
import os
from collections.abc import Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont



def label_color(label: str) -> tuple[int, int, int]:
    """A bright colour that depends only on the label text, so a class has the same colour in every image and run."""
    digest = hashlib.sha1(label.encode("utf-8")).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    saturation = 0.55 + 0.35 * digest[2] / 255.0
    value = 0.75 + 0.25 * digest[3] / 255.0
    return tuple(round(channel * 255) for channel in colorsys.hsv_to_rgb(hue, saturation, value))


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    # Rec. 601 luma: dark text on light boxes, white text on dark ones.
    luma = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def label_anchor(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel nearest the mask's centroid: inside the segment even when it is not convex."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("Cannot place a label on an empty mask.")
    nearest = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return int(xs[nearest]), int(ys[nearest])


def _font(image_size: tuple[int, int]) -> PIL.ImageFont.ImageFont:
    # Text about 1/30 of the shorter side, at least 12 px.
    return _default_font(max(12, min(image_size) // 30))


@functools.lru_cache(maxsize=16)
def _default_font(size: int) -> PIL.ImageFont.ImageFont:
    # Pillow's scalable default font needs FreeType.
    try:
        return PIL.ImageFont.load_default(size=size)
    except ImportError:
        return PIL.ImageFont.load_default()


# A code point no font maps: what a font draws for a character it lacks (its .notdef box, or nothing).
_UNMAPPED = "\U0010fffd"
# Where installed fonts are looked for when the default font lacks a character (Debian's fonts-noto-cjk, for one).
FONT_FOLDERS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts", "/Library/Fonts",
                "/System/Library/Fonts", "C:/Windows/Fonts")
_FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
_SECONDARY_STYLES = ("bold", "italic", "oblique", "light", "condensed", "mono", "serif", "math")


def _glyph(font: PIL.ImageFont.ImageFont, text: str) -> tuple:
    mask = font.getmask(text)
    return mask.size, bytes(mask)


@functools.lru_cache(maxsize=4096)
def _has_glyph(font: PIL.ImageFont.ImageFont, char: str) -> bool:
    """Whether `font` draws `char` itself rather than its missing-glyph box."""
    if char.isspace():
        return True
    if not isinstance(font, PIL.ImageFont.FreeTypeFont):
        return ord(char) < 256  # Pillow's bitmap fallback font covers Latin-1
    return _glyph(font, char) != _glyph(font, _UNMAPPED)


@functools.lru_cache(maxsize=1)
def installed_font_files() -> tuple[str, ...]:
    """Font files found in `FONT_FOLDERS`: Noto and DejaVu first (the widest coverage), plain styles first."""
    files = []
    for folder in FONT_FOLDERS:
        for root, _, names in os.walk(os.path.expanduser(folder)):
            files.extend(os.path.join(root, name) for name in names if name.lower().endswith(_FONT_SUFFIXES))
    def preference(path: str) -> tuple:
        name = os.path.basename(path).lower()
        styled = sum(style in name for style in _SECONDARY_STYLES)
        return "noto" not in name, "dejavu" not in name, styled, path

    return tuple(sorted(files, key=preference))


@functools.lru_cache(maxsize=64)
def _installed_font(path: str, size: int) -> PIL.ImageFont.FreeTypeFont | None:
    try:
        return PIL.ImageFont.truetype(path, size)
    except (OSError, ValueError):  # unreadable, or a bitmap-only colour font that has no glyphs at this size
        return None


@functools.lru_cache(maxsize=4096)
def _font_for(char: str, size: int, default: PIL.ImageFont.ImageFont) -> PIL.ImageFont.ImageFont | None:
    if _has_glyph(default, char):
        return default
    for path in installed_font_files():
        font = _installed_font(path, size)
        if font is not None and _has_glyph(font, char):
            return font
    return None


def label_text_runs(text: str, default: PIL.ImageFont.ImageFont) -> list[tuple[str, PIL.ImageFont.ImageFont]]:
    """Splits a label into runs of characters drawn with one font each: `default` where it has the glyphs, else an
    installed font that has them (`FONT_FOLDERS`), else the character's code written out ("<U+732B>"), so a label is
    never drawn as empty boxes."""
    size = getattr(default, "size", 10)
    runs: list[list] = []
    for char in text:
        font = _font_for(char, size, default)
        piece = char if font is not None else f"<U+{ord(char):04X}>"
        font = font if font is not None else default
        if runs and runs[-1][1] is font:
            runs[-1][0] += piece
        else:
            runs.append([piece, font])
    return [(piece, font) for piece, font in runs]


def _draw_label(draw: PIL.ImageDraw.ImageDraw, anchor: tuple[int, int], text: str, color, font) -> None:
    """Writes `text` in a box of `color` centred on `anchor` and kept inside the image, one font per run of text."""
    runs = label_text_runs(text, font)
    widths = [draw.textlength(piece, font=run_font) for piece, run_font in runs]
    ascent = max(run_font.getmetrics()[0] if hasattr(run_font, "getmetrics") else 10 for _, run_font in runs)
    descent = max(run_font.getmetrics()[1] if hasattr(run_font, "getmetrics") else 2 for _, run_font in runs)
    box_width, box_height = round(sum(widths)) + 4, ascent + descent + 4
    width, height = draw.im.size
    x0 = min(max(0, anchor[0] - box_width // 2), max(0, width - box_width))
    y0 = min(max(0, anchor[1] - box_height // 2), max(0, height - box_height))
    draw.rectangle((x0, y0, x0 + box_width - 1, y0 + box_height - 1), fill=color, outline=(0, 0, 0))
    x = x0 + 2
    for (piece, run_font), run_width in zip(runs, widths):
        if isinstance(run_font, PIL.ImageFont.FreeTypeFont):
            # All runs share one baseline, whatever their fonts' heights.
            draw.text((x, y0 + 2 + ascent), piece, fill=_text_color(color), font=run_font, anchor="ls")
        else:  # Pillow's bitmap font (no FreeType) has no anchors
            draw.text((x, y0 + 2), piece, fill=_text_color(color), font=run_font)
        x += run_width


def draw_segmentation_overlay(
    image: PIL.Image.Image | np.ndarray,
    segmentation: np.ndarray,
    segments_info: Sequence[dict],
    alpha: float = 0.5,
    show_scores: bool = True,
) -> PIL.Image.Image:
    """Blends one colour per segment onto the image and writes each segment's label on it.

    Args:
        image: the (H, W) RGB image (PIL, or an (H, W, 3) uint8 array).
        segmentation: (H, W) integer map of segment ids, 0 = no segment.
        segments_info: one dict per segment with `"id"` and `"label"` (and `"score"`, shown when not None).
        alpha: opacity of the colours (0 = image only, 1 = colours only).
        show_scores: append each segment's score to its label ("cat 0.42").

    Returns:
        An RGB PIL image of the image's size. A segment's colour comes from its label (`label_color`) and is drawn
        opaque along the segment's edges; its label is written in a box of that colour at the segment pixel nearest
        the segment's centroid. Characters Pillow's default font lacks (Chinese, emoji, ...) are drawn with an
        installed font that has them, else written as their code point ("<U+732B>"), never as empty boxes
        (`label_text_runs`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    base = np.asarray(image.convert("RGB") if isinstance(image, PIL.Image.Image) else image)
    if base.ndim != 3 or base.shape[-1] != 3 or base.dtype != np.uint8:
        raise ValueError(f"image must be RGB: a PIL image or an (H, W, 3) uint8 array, got {base.shape} {base.dtype}.")
    segmentation = np.asarray(segmentation)
    if segmentation.shape != base.shape[:2]:
        raise ValueError(f"segmentation has shape {segmentation.shape} but the image is {base.shape[:2]} (H, W).")

    colors = np.zeros((len(segments_info) + 1, 3), dtype=np.float32)
    index = np.zeros(segmentation.shape, dtype=np.int64)  # 0 = no segment, k = segments_info[k - 1]
    for position, segment in enumerate(segments_info, start=1):
        colors[position] = label_color(str(segment["label"]))
        index[segmentation == segment["id"]] = position
    covered = (index > 0)[..., None]
    blended = np.round(base.astype(np.float32) * (1 - alpha) + colors[index] * alpha)
    # Segment edges in full colour, so that neighbours of similar colour stay apart.
    edge = np.zeros(index.shape, dtype=bool)
    edge[:-1] |= index[:-1] != index[1:]
    edge[1:] |= index[1:] != index[:-1]
    edge[:, :-1] |= index[:, :-1] != index[:, 1:]
    edge[:, 1:] |= index[:, 1:] != index[:, :-1]
    blended = np.where((edge & (index > 0))[..., None], colors[index], blended)
    overlay = PIL.Image.fromarray(np.where(covered, blended, base).astype(np.uint8))

    draw = PIL.ImageDraw.Draw(overlay)
    font = _font(overlay.size)
    for position, segment in enumerate(segments_info, start=1):
        mask = index == position
        if not mask.any():
            continue
        text = str(segment["label"])
        if show_scores and segment.get("score") is not None:
            text = f"{text} {segment['score']:.2f}"
        _draw_label(draw, label_anchor(mask), text, label_color(str(segment["label"])), font)
    return overlay


__all__ = ["draw_segmentation_overlay", "label_anchor", "label_color", "label_text_runs"]
