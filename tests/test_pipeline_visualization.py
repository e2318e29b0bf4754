"""Overlay rendering and COCO panoptic PNG encoding."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
from possam.processing.panoptic_png import MAX_SEGMENT_ID, rgb_to_segment_ids, segment_ids_to_rgb
from possam.processing.visualization import draw_segmentation_overlay, label_anchor, label_color


def test_coco_panoptic_encoding_values_and_round_trip(tmp_path):
    ids = np.array([[0, 1, 255, 256], [258, 65536 + 5, 3 * 65536 + 2 * 256 + 1, MAX_SEGMENT_ID]], dtype=np.int32)
    rgb = segment_ids_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 3].tolist() == [0, 1, 0]
    assert rgb[1, 0].tolist() == [2, 1, 0] and rgb[1, 1].tolist() == [5, 0, 1]
    assert rgb[1, 2].tolist() == [1, 2, 3] and rgb[1, 3].tolist() == [255, 255, 255]
    # id = R + 256 G + 256^2 B, through a real PNG file
    PIL.Image.fromarray(rgb).save(tmp_path / "panoptic.png")
    decoded = rgb_to_segment_ids(np.asarray(PIL.Image.open(tmp_path / "panoptic.png")))
    np.testing.assert_array_equal(decoded, ids)
    assert decoded.dtype == np.int64


@pytest.mark.parametrize(
    "ids, message",
    [
        (np.array([[-1, 0]]), r"must lie in \[0, 16777215\]"),
        (np.array([[MAX_SEGMENT_ID + 1]]), r"must lie in \[0, 16777215\]"),
        (np.zeros((2, 2, 2), np.int64), r"shape \(H, W\)"),
        (np.zeros((2, 2), np.float32), "must be integers"),
    ],
)
def test_encoding_rejects_bad_maps(ids, message):
    with pytest.raises(ValueError, match=message):
        segment_ids_to_rgb(ids)
    with pytest.raises(ValueError, match=r"RGB array of shape \(H, W, 3\)"):
        rgb_to_segment_ids(np.zeros((2, 2), np.uint8))


def test_label_colors_are_deterministic_and_distinct():
    labels = ["cat", "dog", "grass", "sky", "person", "road"]
    colors = [label_color(label) for label in labels]
    assert colors == [label_color(label) for label in labels]
    assert len(set(colors)) == len(labels)
    for color in colors:
        assert len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        assert max(color) >= 190  # value >= 0.75: bright enough to see on a photo


def test_label_anchor_lies_inside_non_convex_masks():
    mask = np.zeros((30, 30), bool)
    mask[:, :5] = mask[:, 25:] = mask[25:, :] = True  # a U: its centroid is outside
    x, y = label_anchor(mask)
    assert mask[y, x]
    with pytest.raises(ValueError, match="empty mask"):
        label_anchor(np.zeros((3, 3), bool))


def test_overlay_blends_colors_and_draws_labels():
    height, width = 120, 160
    image = np.full((height, width, 3), 100, np.uint8)
    image[:, :, 2] = np.arange(width, dtype=np.uint8)[None]
    segmentation = np.zeros((height, width), np.int32)
    segmentation[:, :80] = 3  # ids need not be 1..N
    segmentation[60:, 100:] = 7
    info = [{"id": 3, "label": "cat", "score": 0.75}, {"id": 7, "label": "grass", "score": None}]
    overlay = draw_segmentation_overlay(PIL.Image.fromarray(image), segmentation, info, alpha=0.5)
    assert overlay.mode == "RGB" and overlay.size == (width, height)
    result = np.asarray(overlay).astype(np.int64)

    # Pixels outside every segment are untouched.
    outside = segmentation == 0
    np.testing.assert_array_equal(result[outside], image[outside])
    # Away from the label box, a segment pixel is the 50/50 blend with its label's colour.
    cat = np.array(label_color("cat"))
    expected = np.round(image[5, 5] * 0.5 + cat * 0.5)
    np.testing.assert_array_equal(result[5, 5], expected)
    # Edges between segments (or a segment and nothing) are drawn in the opaque label colour.
    np.testing.assert_array_equal(result[5, 79], cat)
    np.testing.assert_array_equal(result[5, 78], np.round(image[5, 78] * 0.5 + cat * 0.5))
    # The label box sits at the segment pixel nearest its centroid, filled with the label colour.
    x, y = label_anchor(segmentation == 3)
    box = result[y - 3 : y + 4, x - 20 : x + 21].reshape(-1, 3)
    assert (box == cat).all(axis=1).any()
    assert (box != np.round(image[y, x] * 0.5 + cat * 0.5)).any(axis=1).any()  # text or box, not plain blend
    grass = np.array(label_color("grass"))
    gx, gy = label_anchor(segmentation == 7)
    assert (result[gy - 3 : gy + 4, gx - 20 : gx + 21].reshape(-1, 3) == grass).all(axis=1).any()


def test_overlay_text_includes_score_only_when_asked():
    image = np.zeros((60, 200, 3), np.uint8)
    segmentation = np.ones((60, 200), np.int32)
    with_score = draw_segmentation_overlay(image, segmentation, [{"id": 1, "label": "cat", "score": 0.5}])
    without = draw_segmentation_overlay(
        image, segmentation, [{"id": 1, "label": "cat", "score": 0.5}], show_scores=False
    )
    color = np.array(label_color("cat"))
    # The box holding "cat 0.50" is wider than the one holding "cat".
    box_pixels = lambda picture: int((np.asarray(picture) == color).all(axis=-1).sum())  # noqa: E731
    assert box_pixels(with_score) > box_pixels(without) > 0


def test_overlay_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match=r"segmentation has shape \(4, 4\) but the image is \(5, 5\)"):
        draw_segmentation_overlay(np.zeros((5, 5, 3), np.uint8), np.zeros((4, 4), np.int32), [])
    with pytest.raises(ValueError, match="alpha must be in"):
        draw_segmentation_overlay(np.zeros((5, 5, 3), np.uint8), np.zeros((5, 5), np.int32), [], alpha=2)
    with pytest.raises(ValueError, match="image must be RGB"):
        draw_segmentation_overlay(np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.int32), [])


def _no_installed_fonts(monkeypatch, tmp_path):
    from possam.processing import visualization

    monkeypatch.setattr(visualization, "FONT_FOLDERS", (str(tmp_path),))
    for cached in (visualization.installed_font_files, visualization._font_for):
        cached.cache_clear()
    monkeypatch.setattr(visualization, "label_color", lambda label: (200, 40, 120))  # same box colour for any label


def test_labels_the_default_font_lacks_are_written_as_code_points_without_installed_fonts(monkeypatch, tmp_path):
    from possam.processing import visualization

    _no_installed_fonts(monkeypatch, tmp_path)
    font = visualization._default_font(14)
    assert visualization._has_glyph(font, "c") and not visualization._has_glyph(font, "猫")
    assert visualization.label_text_runs("猫 cat 😀", font) == [("<U+732B> cat <U+1F600>", font)]
    # The overlay writes exactly that text: the same picture as a label spelled that way.
    image = np.full((60, 160, 3), 90, dtype=np.uint8)
    segmentation = np.ones((60, 160), dtype=np.int32)
    drawn = draw_segmentation_overlay(image, segmentation, [{"id": 1, "label": "猫", "score": 0.5}])
    spelled = draw_segmentation_overlay(image, segmentation, [{"id": 1, "label": "<U+732B>", "score": 0.5}])
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(spelled))
    visualization.installed_font_files.cache_clear()
    visualization._font_for.cache_clear()


def test_labels_the_default_font_lacks_use_an_installed_font_that_has_them():
    from possam.processing import visualization

    font = visualization._default_font(14)
    greek = "σκύλος"
    runs = visualization.label_text_runs(f"dog {greek}", font)
    assert runs[0] == ("dog ", font)
    with_greek = [
        path for path in visualization.installed_font_files()
        if all(visualization._has_glyph(visualization._installed_font(path, 14), char) for char in greek)
    ]
    if with_greek:  # this machine has such a font (Debian: fonts-dejavu-core, fonts-noto-core)
        assert runs[1][0] == greek and runs[1][1].path == with_greek[0]
    else:
        assert runs[1] == ("".join(f"<U+{ord(char):04X}>" for char in greek), font)
