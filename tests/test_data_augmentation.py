"""Large-scale jitter and the eval resize: identical geometry on image and map, scale range, crop, pad, flip."""

import numpy as np
import pytest
from PIL import Image

from possam.training.augmentation import LargeScaleJitter, resize_longest_side
from possam.processing.panoptic_png import rgb_to_segment_ids, segment_ids_to_rgb
from possam.training.panoptic_targets import panoptic_targets


def _coordinate_scene(height=30, width=50):
    """A map with a unique id per pixel and an image whose colours encode that same id."""
    ids = 1 + np.arange(height * width, dtype=np.int64).reshape(height, width)
    return segment_ids_to_rgb(ids), ids


@pytest.mark.parametrize("seed", range(8))
def test_image_and_map_get_identical_geometry(seed):
    image, ids = _coordinate_scene()
    transform = LargeScaleJitter(target_size=40, min_scale=0.1, max_scale=2.0, image_resample="nearest")
    out = transform(image, ids, np.random.default_rng(seed))
    assert out.image.shape == (40, 40, 3) and out.segment_ids.shape == (40, 40) and out.valid_mask.shape == (40, 40)
    # With nearest sampling for both, the image's colours decode to exactly the map, pixel for pixel.
    assert np.array_equal(rgb_to_segment_ids(out.image)[out.valid_mask], out.segment_ids[out.valid_mask])
    assert (out.segment_ids[~out.valid_mask] == 0).all() and (out.image[~out.valid_mask] == 0).all()
    assert (out.segment_ids[out.valid_mask] > 0).all()


def test_bilinear_image_agrees_with_map_away_from_borders():
    # Blocks of 6x6 pixels with one colour per block: inside a block, bilinear sampling returns the block colour.
    block_ids = np.arange(1, 1 + 5 * 8).reshape(5, 8)
    ids = np.kron(block_ids, np.ones((6, 6), dtype=np.int64))
    palette = np.random.default_rng(0).integers(0, 255, (ids.max() + 1, 3)).astype(np.uint8)
    image = palette[ids]
    out = LargeScaleJitter(target_size=48, min_scale=1.0, max_scale=1.5)(image, ids, rng=3)
    interior = out.valid_mask.copy()
    padded = np.pad(out.segment_ids, 1, mode="edge")
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= padded[1 + dy : 49 + dy, 1 + dx : 49 + dx] == out.segment_ids
    assert interior.sum() > 500
    difference = np.abs(out.image[interior].astype(int) - palette[out.segment_ids[interior]].astype(int))
    assert difference.max() <= 1


def test_scale_range_resize_and_crop_bounds():
    image, ids = _coordinate_scene(30, 50)
    transform = LargeScaleJitter(target_size=40, min_scale=0.5, max_scale=1.8, flip_probability=0.0)
    rng = np.random.default_rng(0)
    scales = []
    for _ in range(60):
        out = transform(image, ids, rng)
        scales.append(out.scale)
        factor = out.scale * 40 / 50
        assert out.resized_size == (round(30 * factor), round(50 * factor))
        top, left = out.crop_offset
        assert 0 <= top <= max(0, out.resized_size[0] - 40) and 0 <= left <= max(0, out.resized_size[1] - 40)
        valid_rows = min(40, out.resized_size[0] - top)
        valid_cols = min(40, out.resized_size[1] - left)
        assert out.valid_mask.sum() == valid_rows * valid_cols
        assert out.valid_mask[:valid_rows, :valid_cols].all()
        # The top-left valid pixel comes from the resized map at the crop offset.
        row_scale, col_scale = 30 / out.resized_size[0], 50 / out.resized_size[1]
        expected = ids[int((top + 0.5) * row_scale), int((left + 0.5) * col_scale)]
        assert out.segment_ids[0, 0] == expected
    assert min(scales) >= 0.5 and max(scales) <= 1.8
    assert min(scales) < 0.7 and max(scales) > 1.6  # the range is actually covered


def test_default_recipe_is_1024_with_scales_0_1_to_2():
    transform = LargeScaleJitter()
    assert (transform.target_size, transform.min_scale, transform.max_scale, transform.flip_probability) == (
        1024,
        0.1,
        2.0,
        0.5,
    )


def test_flip_mirrors_image_and_map():
    image, ids = _coordinate_scene(20, 32)
    transform = LargeScaleJitter(target_size=32, min_scale=1.0, max_scale=1.0, flip_probability=1.0)
    out = transform(image, ids, rng=0)
    assert out.flipped and out.resized_size == (20, 32) and out.crop_offset == (0, 0)
    assert np.array_equal(out.segment_ids[:20], ids[:, ::-1])
    assert np.array_equal(out.image[:20], image[:, ::-1])
    flips = [LargeScaleJitter(target_size=32)(image, ids, rng=seed).flipped for seed in range(40)]
    assert 5 < sum(flips) < 35


def test_seeded_and_generator_reproducible():
    image, ids = _coordinate_scene()
    transform = LargeScaleJitter(target_size=32)
    first, second = transform(image, ids, rng=123), transform(Image.fromarray(image), ids, rng=123)
    assert np.array_equal(first.image, second.image) and np.array_equal(first.segment_ids, second.segment_ids)
    rng = np.random.default_rng(5)
    a, b = transform(image, ids, rng), transform(image, ids, rng)
    assert (a.scale, a.crop_offset) != (b.scale, b.crop_offset)  # the generator advances


def test_large_ids_survive_resizing():
    ids = np.array([[256**3 - 1, 1], [70000, 0]], dtype=np.int64)
    out = LargeScaleJitter(target_size=8, min_scale=1.0, max_scale=1.0, flip_probability=0.0)(
        np.zeros((2, 2, 3), np.uint8), ids, rng=0
    )
    assert set(np.unique(out.segment_ids).tolist()) == {0, 1, 70000, 256**3 - 1}


def test_eval_resize_longest_side():
    image, ids = _coordinate_scene(30, 50)
    out = resize_longest_side(image, ids, target_size=100)
    assert out.image.shape == (60, 100, 3) and out.segment_ids.shape == (60, 100) and out.valid_mask.all()
    assert not out.flipped and out.scale == 1.0
    assert np.array_equal(out.segment_ids[::2, ::2], ids)
    tall = resize_longest_side(image.transpose(1, 0, 2), ids.T, target_size=25)
    assert tall.segment_ids.shape == (25, 15)


def test_bad_inputs():
    image, ids = _coordinate_scene()
    with pytest.raises(ValueError, match=r"segment_ids has shape \(30, 49\) but the image is 30x50"):
        LargeScaleJitter(32)(image, ids[:, :49])
    with pytest.raises(ValueError, match="integer map"):
        LargeScaleJitter(32)(image, ids.astype(np.float32))
    with pytest.raises(ValueError, match="min_scale <= max_scale"):
        LargeScaleJitter(32, min_scale=2.0, max_scale=1.0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        resize_longest_side(image.astype(np.float32), ids)


def test_targets_after_jitter_drop_cropped_and_crowd_segments():
    ids = np.zeros((20, 20), dtype=np.int64)
    ids[:10] = 5
    ids[10:, :10] = 6
    ids[10:, 10:] = 7
    info = [
        {"id": 5, "label_id": 2, "iscrowd": 0},
        {"id": 6, "label_id": 0, "iscrowd": 1},
        {"id": 7, "label_id": 1, "iscrowd": 0},
    ]
    masks, labels = panoptic_targets(ids, info)
    assert labels.tolist() == [2, 1] and masks.shape == (2, 20, 20)
    assert masks[0].sum() == 200 and masks[1].sum() == 100 and masks.dtype.is_floating_point
    masks, labels = panoptic_targets(ids, info, include_crowd=True)
    assert labels.tolist() == [2, 0, 1]
    cropped = ids[:10]  # segments 6 and 7 cropped away
    masks, labels = panoptic_targets(cropped, info)
    assert labels.tolist() == [2] and masks.shape == (1, 10, 20)
    masks, labels = panoptic_targets(np.zeros((4, 4), np.int64), info)
    assert masks.shape == (0, 4, 4) and labels.shape == (0,)
