"""PosSamImageProcessor: SAM-exact pre-processing, accepted input forms, errors, and training targets."""

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import SamImageProcessorPil

from possam.configuration.configuration_possam import SAM_IMAGE_MEAN, SAM_IMAGE_STD
from possam.processing import PosSamImageProcessor
from possam.processing.resizing import longest_edge_resize_shape


MEAN = torch.tensor(SAM_IMAGE_MEAN)[:, None, None]
STD = torch.tensor(SAM_IMAGE_STD)[:, None, None]


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def processor():
    return PosSamImageProcessor(size=64)


def unnormalize(pixel_values):
    return pixel_values * STD + MEAN


def test_matches_transformers_sam_processor(rgb):
    ours = PosSamImageProcessor()(rgb)
    reference = SamImageProcessorPil()(rgb, return_tensors="pt")
    assert ours["pixel_values"].shape == (1, 3, 1024, 1024)
    assert ours["reshaped_input_sizes"].tolist() == reference["reshaped_input_sizes"].tolist() == [[614, 1024]]
    assert ours["original_sizes"].tolist() == [[30, 50]]
    torch.testing.assert_close(ours["pixel_values"], reference["pixel_values"].float(), atol=2e-5, rtol=0)


def test_outputs_shapes_mask_and_padding(processor, rgb):
    out = processor([rgb, rgb.transpose(1, 0, 2)])
    assert set(out) == {"pixel_values", "pixel_mask", "original_sizes", "reshaped_input_sizes"}
    assert out["pixel_values"].dtype == torch.float32 and out["pixel_values"].shape == (2, 3, 64, 64)
    assert out["pixel_mask"].dtype == torch.int64 and out["pixel_mask"].shape == (2, 64, 64)
    assert out["original_sizes"].tolist() == [[30, 50], [50, 30]]
    assert out["reshaped_input_sizes"].tolist() == [[38, 64], [64, 38]]
    assert out["pixel_mask"][0, :38].all() and not out["pixel_mask"][0, 38:].any()
    assert out["pixel_mask"][1, :, :38].all() and not out["pixel_mask"][1, :, 38:].any()
    # Padding is 0 after normalization (as SAM), the image itself is normalized.
    assert (out["pixel_values"][0, :, 38:] == 0).all() and (out["pixel_values"][1, :, :, 38:] == 0).all()
    assert out["pixel_values"][0, :, :38].abs().sum() > 0


def test_resize_shape_rounding():
    assert longest_edge_resize_shape(480, 640, 1024) == (768, 1024)
    assert longest_edge_resize_shape(427, 640, 1024) == (683, 1024)  # 682.9 rounds up, as SAM
    assert longest_edge_resize_shape(1000, 3, 128) == (128, 1)  # never zero pixels
    with pytest.raises(ValueError, match="positive"):
        longest_edge_resize_shape(0, 5, 10)


def test_accepted_input_forms_agree(processor, rgb, tmp_path):
    path = tmp_path / "image.png"
    PIL.Image.fromarray(rgb).save(path)
    reference = processor(rgb)["pixel_values"]
    forms = {
        "pil": PIL.Image.fromarray(rgb),
        "path": str(path),
        "pathlike": path,
        "chw numpy": rgb.transpose(2, 0, 1).copy(),
        "hwc tensor": torch.from_numpy(rgb),
        "chw tensor": torch.from_numpy(rgb).permute(2, 0, 1),
        "int64 numpy": rgb.astype(np.int64),
        "list": [rgb],
        "4-d batch": rgb[None],
    }
    for name, image in forms.items():
        torch.testing.assert_close(processor(image)["pixel_values"], reference, msg=name, atol=0, rtol=0)
    # Float inputs skip uint8 rounding inside PIL's resize: equal up to one intensity level.
    floats = {
        "float [0,1]": rgb / 255.0,
        "float [0,255]": rgb.astype(np.float32),
        "bfloat16 tensor": torch.from_numpy(rgb).permute(2, 0, 1).to(torch.bfloat16),
    }
    for name, image in floats.items():
        values = unnormalize(processor(image)["pixel_values"][0])[:, :38]
        expected = unnormalize(reference[0])[:, :38]
        assert (values - expected).abs().max() <= 1.0 + 1e-3, name


def test_grayscale_and_rgba(processor):
    gray = np.random.default_rng(1).integers(0, 256, (20, 20), dtype=np.uint8)
    out = processor(gray)["pixel_values"][0]
    torch.testing.assert_close(out, processor(np.stack([gray] * 3, -1))["pixel_values"][0])
    torch.testing.assert_close(out, processor(PIL.Image.fromarray(gray, mode="L"))["pixel_values"][0])
    # RGBA: transparent pixels become white, opaque ones keep their colour.
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:8, :, 3] = 255
    pixels = unnormalize(PosSamImageProcessor(size=16)(rgba)["pixel_values"][0])
    torch.testing.assert_close(
        pixels[:, :8], torch.tensor([200.0, 0.0, 0.0])[:, None, None].expand(3, 8, 16), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(pixels[:, 8:], torch.full((3, 8, 16), 255.0), atol=1e-3, rtol=0)
    pil_pixels = unnormalize(PosSamImageProcessor(size=16)(PIL.Image.fromarray(rgba))["pixel_values"][0])
    torch.testing.assert_close(pil_pixels, pixels, atol=1e-3, rtol=0)


def test_high_bit_depth_pil_images_are_range_checked_not_clipped(processor):
    as_float = PIL.Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32))  # mode "F", [0, 1] scale
    assert torch.allclose(
        unnormalize(processor(as_float)["pixel_values"][0])[:, :8, :8], torch.tensor(127.5), atol=1e-3
    )
    with pytest.raises(ValueError, match=r"got range \[70000, 70000\]"):
        processor(PIL.Image.fromarray(np.full((8, 8), 70000, dtype=np.int32)))  # mode "I"


@pytest.mark.parametrize("peak", [65535, 200])
def test_sixteen_bit_pngs_are_scaled_by_their_bit_depth_not_their_values(processor, tmp_path, peak):
    gray = np.linspace(0, peak, 8 * 8).reshape(8, 8).astype(np.uint16)
    path = tmp_path / "gray16.png"
    PIL.Image.fromarray(gray).save(path)
    assert PIL.Image.open(path).mode == "I;16"
    pixels = unnormalize(processor(str(path), do_resize=False)["pixel_values"][0])[:, :8, :8]
    expected = torch.from_numpy(gray.astype(np.float32) * (255.0 / 65535.0)).expand(3, 8, 8)
    torch.testing.assert_close(pixels, expected, atol=1e-3, rtol=0)
    # A 16-bit file whose values are all <= 255 is a very dark image, not a bright 8-bit one.
    assert float(pixels.max()) == pytest.approx(peak * 255.0 / 65535.0, abs=1e-3)


def test_an_undecodable_image_file_names_its_position_once(tmp_path):
    from possam.processing.image_inputs import load_image

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError) as raised:
        load_image(str(broken), where="image 1 of 1")
    assert str(raised.value).count("image 1 of 1") == 1 and str(raised.value).startswith("image 1 of 1: cannot read")
    huge = tmp_path / "huge.tif"
    PIL.Image.fromarray(np.full((4, 4), 70000, dtype=np.int32)).save(huge)
    with pytest.raises(ValueError) as raised:
        load_image(str(huge), where="image 1 of 1")
    message = str(raised.value)
    assert message.count("image 1 of 1") == 1 and "got range [70000, 70000]" in message and str(huge) in message


@pytest.mark.parametrize(
    "image, error, message",
    [
        (np.zeros((4, 5, 6, 7), dtype=np.uint8)[None], ValueError, "2 or 3 dimensions"),
        (np.zeros((10, 10, 2), dtype=np.uint8), ValueError, r"got shape \(10, 10, 2\)"),
        (np.zeros((10, 10, 3), dtype=bool), ValueError, "got dtype bool"),
        (np.full((10, 10, 3), 300.0), ValueError, r"\[0, 1\] or \[0, 255\].*300"),
        (np.full((10, 10, 3), np.nan), ValueError, "NaN"),
        (np.zeros((0, 10, 3), dtype=np.uint8), ValueError, "empty"),
        (
            {"not": "an image"},
            TypeError,
            "expected a PIL image, a file path, a numpy array or a torch tensor, got dict",
        ),
        ([], ValueError, "empty list"),
        ("/does/not/exist.png", ValueError, "cannot read image file '/does/not/exist.png'"),
    ],
)
def test_bad_images_raise_clear_errors(processor, image, error, message):
    with pytest.raises(error, match=message):
        processor(image)


def test_bad_options(processor, rgb):
    with pytest.raises(ValueError, match="longest_edge"):
        PosSamImageProcessor(size={"height": 10, "width": 10})
    with pytest.raises(ValueError, match="image_mean must have 3 values"):
        PosSamImageProcessor(image_mean=[1.0, 2.0])
    with pytest.raises(ValueError, match="must fit in 20x20, got 30x50"):
        processor(rgb, do_resize=False, size=20)
    with pytest.raises(ValueError, match="return_tensors"):
        processor(rgb, return_tensors="tf")


def test_save_and_load_round_trip(tmp_path, rgb):
    processor = PosSamImageProcessor(size=128, image_mean=[1.0, 2.0, 3.0], image_std=[4.0, 5.0, 6.0])
    processor.save_pretrained(tmp_path)
    loaded = PosSamImageProcessor.from_pretrained(tmp_path)
    assert loaded.size == {"longest_edge": 128}
    assert loaded.image_mean == [1.0, 2.0, 3.0] and loaded.image_std == [4.0, 5.0, 6.0]
    torch.testing.assert_close(loaded(rgb)["pixel_values"], processor(rgb)["pixel_values"])


# ---------------------------------------------------------------------------------------------- training targets


def panoptic_example():
    """A 6x8 image: segment 1 (category 10, left), 2 (category 20, right top), 3 (crowd, right bottom), void row."""
    ids = np.zeros((6, 8), dtype=np.int64)
    ids[:5, :4] = 1
    ids[:3, 4:] = 2
    ids[3:5, 4:] = 3
    segments = [
        {"id": 1, "category_id": 10, "iscrowd": 0},
        {"id": 2, "category_id": 20},
        {"id": 3, "category_id": 10, "iscrowd": 1},
        {"id": 7, "category_id": 20},  # absent from the map: no mask
    ]
    return ids, segments


def test_panoptic_targets_without_resize():
    ids, segments = panoptic_example()
    processor = PosSamImageProcessor(size=8)
    out = processor(
        np.zeros((6, 8, 3), np.uint8),
        [{"panoptic_map": ids, "segments_info": segments}],
        category_to_label={10: 0, 20: 1},
    )
    masks, labels, ignore = out["mask_labels"][0], out["class_labels"][0], out["ignore_mask"][0]
    assert masks.dtype == torch.float32 and masks.shape == (2, 8, 8)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1]
    assert ignore.dtype == torch.bool and ignore.shape == (8, 8)
    assert masks[0, :6, :8].numpy().astype(bool).tolist() == (ids == 1).tolist()
    assert masks[1, :6, :8].numpy().astype(bool).tolist() == (ids == 2).tolist()
    assert not masks[:, 6:].any()
    expected_ignore = np.ones((8, 8), bool)
    expected_ignore[:6] = (ids == 0) | (ids == 3)
    assert ignore.numpy().tolist() == expected_ignore.tolist()


def test_panoptic_targets_follow_image_resize_with_nearest():
    ids, segments = panoptic_example()
    processor = PosSamImageProcessor(size=16)
    out = processor(
        np.zeros((6, 8, 3), np.uint8),
        {"panoptic_map": ids, "segments_info": segments},
        category_to_label={10: 0, 20: 1},
    )
    assert out["reshaped_input_sizes"].tolist() == [[12, 16]]
    upsampled = np.kron(ids, np.ones((2, 2), dtype=np.int64))  # exact 2x nearest
    assert out["mask_labels"][0][0, :12, :16].bool().numpy().tolist() == (upsampled == 1).tolist()
    assert out["mask_labels"][0][1, :12, :16].bool().numpy().tolist() == (upsampled == 2).tolist()
    assert out["ignore_mask"][0, :12, :16].numpy().tolist() == ((upsampled == 0) | (upsampled == 3)).tolist()
    assert out["ignore_mask"][0, 12:].all()


def test_coco_rgb_png_and_label_ids(tmp_path):
    ids, segments = panoptic_example()
    ids = ids * 1000  # ids above 255 exercise the G channel of COCO's encoding
    rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], -1).astype(np.uint8)
    path = tmp_path / "pan.png"
    PIL.Image.fromarray(rgb).save(path)
    segments = [
        {"id": s["id"] * 1000, "label_id": {10: 3, 20: 4}[s["category_id"]], "iscrowd": s.get("iscrowd", 0)}
        for s in segments
    ]
    out = PosSamImageProcessor(size=8)(
        np.zeros((6, 8, 3), np.uint8), [{"panoptic_map": str(path), "segments_info": segments}]
    )
    assert out["class_labels"][0].tolist() == [3, 4]
    assert out["mask_labels"][0][0, :6].bool().numpy().tolist() == (ids == 1000).tolist()


def test_instance_and_semantic_targets():
    processor = PosSamImageProcessor(size=4)
    instance_map = np.array([[0, 1, 1, 2], [0, 1, 5, 2], [3, 3, 5, 2], [3, 3, 0, 0]])
    out = processor(
        np.zeros((4, 4, 3), np.uint8),
        [{"instance_map": instance_map, "instance_to_class": {1: 7, 2: 8, 3: 7, 5: 9}, "crowd_instance_ids": [5]}],
        category_to_label={7: 0, 8: 1, 9: 2},
    )
    assert out["class_labels"][0].tolist() == [0, 1, 0]
    for mask, instance in zip(out["mask_labels"][0], [1, 2, 3]):
        assert mask.bool().numpy().tolist() == (instance_map == instance).tolist()
    assert out["ignore_mask"][0].numpy().tolist() == np.isin(instance_map, [0, 5]).tolist()

    semantic_map = np.array([[1, 1, 255, 4], [1, 4, 4, 4], [255, 255, 4, 4], [1, 1, 1, 1]], dtype=np.uint8)
    out = processor(torch.zeros(3, 4, 4), {"semantic_map": torch.from_numpy(semantic_map)})
    assert out["class_labels"][0].tolist() == [1, 4]
    assert out["mask_labels"][0][1].bool().numpy().tolist() == (semantic_map == 4).tolist()
    assert out["ignore_mask"][0].numpy().tolist() == (semantic_map == 255).tolist()
    # Two dataset ids mapped to one label make one mask.
    merged = processor(torch.zeros(3, 4, 4), {"semantic_map": semantic_map}, category_to_label={1: 0, 4: 0})
    assert merged["class_labels"][0].tolist() == [0]
    assert merged["mask_labels"][0][0].bool().numpy().tolist() == (semantic_map != 255).tolist()


def test_prepare_training_example_pads_without_resizing():
    processor = PosSamImageProcessor(size=16)
    image = torch.randint(0, 256, (3, 10, 12), dtype=torch.uint8)
    semantic = np.zeros((10, 12), dtype=np.int64)
    semantic[2:6, 3:9] = 1
    example = processor.prepare_training_example(image, {"semantic_map": semantic, "ignore_index": None})
    assert set(example) == {"pixel_values", "pixel_mask", "mask_labels", "class_labels", "ignore_mask"}
    assert example["pixel_values"].shape == (3, 16, 16) and example["pixel_mask"].sum() == 120
    torch.testing.assert_close(unnormalize(example["pixel_values"])[:, :10, :12], image.float(), atol=1e-4, rtol=0)
    assert example["class_labels"].tolist() == [0, 1]
    assert example["mask_labels"][1, :10, :12].bool().numpy().tolist() == (semantic == 1).tolist()
    assert example["ignore_mask"].sum() == 256 - 120


@pytest.mark.parametrize(
    "annotation, kwargs, message",
    [
        (
            {"panoptic_map": np.ones((6, 8)), "segments_info": [{"id": 1, "category_id": 99}]},
            {"category_to_label": {10: 0}},
            "category id 99 is not in category_to_label",
        ),
        (
            {"panoptic_map": np.ones((6, 8)), "segments_info": [{"id": 1, "category_id": 10}]},
            {},
            "'category_id' needs category_to_label",
        ),
        (
            {"panoptic_map": np.full((6, 8), 4), "segments_info": [{"id": 1, "label_id": 0}]},
            {},
            r"contains ids \[4\] that the annotation does not describe",
        ),
        (
            {"panoptic_map": np.ones((6, 8)), "segments_info": [{"id": 1, "label_id": 0}, {"id": 1, "label_id": 1}]},
            {},
            "duplicate segment id 1",
        ),
        (
            {"panoptic_map": np.ones((6, 8)), "segments_info": [{"id": 1, "label_id": 5}]},
            {"num_labels": 3},
            r"label id 5 is outside \[0, 3\)",
        ),
        ({"semantic_map": np.ones((5, 8))}, {}, "the map is 5x8 but its image is 6x8"),
        ({"semantic_map": np.ones((6, 8)), "panoptic_map": np.ones((6, 8))}, {}, "expected exactly one of"),
        ({"instance_map": np.ones((6, 8))}, {}, "needs 'instance_to_class'"),
        ({"semantic_map": np.full((6, 8), 0.5)}, {}, "expected integer ids"),
        ({"semantic_map": "/no/such/map.png"}, {}, "cannot read the map file '/no/such/map.png'"),
    ],
)
def test_bad_annotations_raise_clear_errors(annotation, kwargs, message):
    with pytest.raises(ValueError, match=message):
        PosSamImageProcessor(size=8)(np.zeros((6, 8, 3), np.uint8), [annotation], **kwargs)


def test_annotation_count_must_match_images():
    with pytest.raises(ValueError, match="Got 2 images but 1 annotations"):
        PosSamImageProcessor(size=8)([np.zeros((6, 8, 3), np.uint8)] * 2, [{"semantic_map": np.zeros((6, 8))}])
