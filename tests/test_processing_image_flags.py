"""PosSamImageProcessor's standard transformers flags (do_rescale, rescale_factor, do_convert_rgb, do_pad,
input_data_format, data_format) with their standard meaning, and COCO RLE output of post-processing."""

import numpy as np
import PIL.Image
import pytest
import torch
from pipeline_testing import random_image, single_thread, tiny_model, tiny_processor  # noqa: F401  (autouse fixture)
from pycocotools import mask as coco_mask
from transformers import SamImageProcessorPil
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from possam.processing import PosSamImageProcessor


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def processor():
    return PosSamImageProcessor(size=64)


def test_do_rescale_with_sam_convention_equals_default(rgb):
    """transformers' SAM convention (rescale to [0, 1], ImageNet mean/std on that scale) gives the same pixels as
    PosSAM's default normalization on the 0-255 scale, and the same as transformers' SamImageProcessor."""
    default = PosSamImageProcessor()(rgb)["pixel_values"]
    rescaled = PosSamImageProcessor(
        do_rescale=True, rescale_factor=1 / 255, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD
    )(rgb)["pixel_values"]
    torch.testing.assert_close(rescaled, default, atol=1e-5, rtol=0)
    reference = SamImageProcessorPil()(rgb, return_tensors="pt")["pixel_values"].float()
    torch.testing.assert_close(rescaled, reference, atol=2e-5, rtol=0)


def test_do_rescale_applies_its_factor_before_normalizing(processor, rgb):
    plain = processor(rgb, do_normalize=False)["pixel_values"]  # resized 0-255 values, zero padding
    rescaled = processor(rgb, do_normalize=False, do_rescale=True, rescale_factor=0.5)["pixel_values"]
    torch.testing.assert_close(rescaled, plain * 0.5)
    normalized = processor(rgb, do_rescale=True, rescale_factor=0.5, image_mean=[1, 2, 3], image_std=[2, 4, 8])
    valid = normalized["pixel_mask"][0].bool()
    expected = (plain[0] * 0.5 - torch.tensor([1.0, 2, 3])[:, None, None]) / torch.tensor([2.0, 4, 8])[:, None, None]
    torch.testing.assert_close(normalized["pixel_values"][0][:, valid], expected[:, valid])
    # By default nothing is rescaled.
    assert processor.do_rescale is False and processor.rescale_factor == pytest.approx(1 / 255)


def test_flags_survive_save_and_load(tmp_path, rgb):
    processor = PosSamImageProcessor(
        size=64, do_rescale=True, rescale_factor=0.5, do_convert_rgb=False, do_pad=False, image_mean=[1, 2, 3]
    )
    processor.save_pretrained(tmp_path)
    loaded = PosSamImageProcessor.from_pretrained(tmp_path)
    assert (loaded.do_rescale, loaded.rescale_factor, loaded.do_convert_rgb, loaded.do_pad) == (True, 0.5, False, False)
    torch.testing.assert_close(loaded(rgb)["pixel_values"], processor(rgb)["pixel_values"])


def test_do_pad_false_keeps_the_resized_size(processor, rgb):
    padded = processor(rgb)
    unpadded = processor(rgb, do_pad=False)
    assert unpadded["pixel_values"].shape == (1, 3, 38, 64) and unpadded["pixel_mask"].shape == (1, 38, 64)
    assert unpadded["pixel_mask"].all()
    torch.testing.assert_close(unpadded["pixel_values"], padded["pixel_values"][:, :, :38, :])
    assert unpadded["reshaped_input_sizes"].tolist() == [[38, 64]]
    same_size = processor([rgb, rgb[::-1]], do_pad=False)
    assert same_size["pixel_values"].shape == (2, 3, 38, 64)
    with pytest.raises(ValueError, match=r"do_pad=False the images of a batch must have the same size.*\(38, 64\), \(64, 38\)"):
        processor([rgb, rgb.transpose(1, 0, 2)], do_pad=False)
    with pytest.raises(ValueError, match="annotations need do_pad=True"):
        processor(rgb, [{"semantic_map": np.zeros((30, 50), np.int64)}], do_pad=False)


def test_data_format_channels_last(processor, rgb):
    first = processor(rgb)["pixel_values"]
    last = processor(rgb, data_format="channels_last")["pixel_values"]
    assert last.shape == (1, 64, 64, 3)
    torch.testing.assert_close(last, first.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="data_format must be 'channels_first' or 'channels_last', got 'nhwc'"):
        processor(rgb, data_format="nhwc")


def test_input_data_format_decides_ambiguous_layouts(processor):
    # (3, 5, 3) fits both layouts: numpy arrays are read as (H, W, C) unless told otherwise.
    array = np.random.default_rng(1).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    assert processor(array)["original_sizes"].tolist() == [[3, 5]]
    as_first = processor(array, input_data_format="channels_first")
    assert as_first["original_sizes"].tolist() == [[5, 3]]
    torch.testing.assert_close(as_first["pixel_values"], processor(np.moveaxis(array, 0, -1))["pixel_values"])
    # (4, 6, 3) as a tensor is read as (C, H, W) with 4 channels (RGBA) unless told it is channels-last.
    tensor = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (4, 6, 3), dtype=np.uint8))
    assert processor(tensor)["original_sizes"].tolist() == [[6, 3]]
    as_last = processor(tensor, input_data_format="channels_last")
    assert as_last["original_sizes"].tolist() == [[4, 6]]
    torch.testing.assert_close(as_last["pixel_values"], processor(tensor.numpy())["pixel_values"])
    with pytest.raises(ValueError, match="input_data_format must be 'channels_first' or 'channels_last'"):
        processor(array, input_data_format="sideways")


def test_do_convert_rgb_false_requires_rgb(processor, rgb, tmp_path):
    image = PIL.Image.fromarray(rgb)
    torch.testing.assert_close(processor(image, do_convert_rgb=False)["pixel_values"], processor(image)["pixel_values"])
    grey = image.convert("L")
    assert processor(grey)["pixel_values"].shape == (1, 3, 64, 64)  # converted by default
    with pytest.raises(ValueError, match="do_convert_rgb=False needs RGB images, got a PIL image in mode 'L'"):
        processor(grey, do_convert_rgb=False)
    grey.save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match="mode 'L'"):
        processor(str(tmp_path / "grey.png"), do_convert_rgb=False)
    with pytest.raises(ValueError, match=r"needs 3-channel images, got an array of shape \(30, 50\)"):
        processor(rgb[..., 0], do_convert_rgb=False)


@pytest.fixture(scope="module")
def model_outputs():
    model, processor = tiny_model(), tiny_processor()
    image = random_image(60, 90, seed=1)
    inputs = processor(images=image, text="cat,dog|puppy,grass")
    with torch.no_grad():
        outputs = model(**inputs)
    return processor, outputs, inputs


def test_panoptic_coco_annotation_is_coco_rle(model_outputs):
    processor, outputs, inputs = model_outputs
    kwargs = {"target_sizes": inputs["original_sizes"], "reshaped_input_sizes": inputs["reshaped_input_sizes"]}
    # Keeping every overlapped segment gives the random tiny model several segments (3 for this image).
    kwargs["overlap_mask_area_threshold"] = 0.0
    maps = processor.post_process_panoptic_segmentation(outputs, "cat,dog|puppy,grass", **kwargs)
    coco = processor.post_process_panoptic_segmentation(
        outputs, "cat,dog|puppy,grass", return_coco_annotation=True, **kwargs
    )
    segmentation, info = maps[0]["segmentation"], maps[0]["segments_info"]
    assert len(info) >= 2 and coco[0]["segments_info"] == info
    rles = coco[0]["segmentation"]
    assert len(rles) == len(info)
    for rle, segment in zip(rles, info):
        assert rle["size"] == [60, 90] and isinstance(rle["counts"], str)
        np.testing.assert_array_equal(coco_mask.decode(rle).astype(bool), (segmentation == segment["id"]).numpy())
        assert int(coco_mask.area(rle)) == int((segmentation == segment["id"]).sum())


def test_instance_coco_annotation_keeps_overlapping_masks(model_outputs):
    processor, outputs, inputs = model_outputs
    kwargs = {"target_sizes": inputs["original_sizes"], "reshaped_input_sizes": inputs["reshaped_input_sizes"]}
    binary = processor.post_process_instance_segmentation(outputs, "cat,dog|puppy,grass", return_binary_maps=True, **kwargs)
    coco = processor.post_process_instance_segmentation(outputs, "cat,dog|puppy,grass", return_coco_annotation=True, **kwargs)
    masks = binary[0]["segmentation"]
    assert masks.shape[0] == len(coco[0]["segmentation"]) == len(coco[0]["segments_info"]) >= 2
    decoded = np.stack([coco_mask.decode(rle) for rle in coco[0]["segmentation"]]).astype(bool)
    np.testing.assert_array_equal(decoded, masks.numpy())
