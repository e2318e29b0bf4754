"""Image processor of PosSAM: SAM's longest-edge resize, normalization and bottom/right padding, training targets,
and the post-processing of model outputs (PIL/numpy backend, no torchvision)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TypedDict

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ChannelDimension, PILImageResampling

from ..configuration.configuration_possam import SAM_IMAGE_MEAN, SAM_IMAGE_STD
from ..configuration.remote_code import IMAGE_PROCESSOR_AUTO_MAP, SavesRemoteCode, write_remote_code
from . import postprocessing
from .annotations import layout_to_targets, parse_annotation
from .coco_rle import encode_masks, encode_segments
from .image_inputs import as_image_list, load_image
from .resizing import longest_edge_resize_shape


class PosSamImageProcessorKwargs(TypedDict, total=False):
    """Options of [`PosSamImageProcessor`], saved in `preprocessor_config.json`."""

    do_resize: bool
    size: dict[str, int] | int
    resample: int
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: list[float] | tuple[float, ...]
    image_std: list[float] | tuple[float, ...]
    do_convert_rgb: bool
    do_pad: bool


class PosSamImageProcessor(SavesRemoteCode, PilBackend):
    r"""
    Prepares images for [`PosSamModel`] as SAM does: the longest edge is resized to `size["longest_edge"]` (S,
    bilinear), pixels are normalized on the 0-255 scale with SAM's ImageNet mean/std, and the image is padded with
    zeros (after normalization) at the bottom and right to S x S. Images may be PIL images, file paths, http(s) URLs,
    numpy arrays or tensors. Optionally turns panoptic, instance or semantic
    annotations into the training targets (`mask_labels`, `class_labels`, `ignore_mask`), and post-processes model
    outputs into panoptic, instance or semantic segmentations at the original image size.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Resize the longest edge to S. When `False`, images (already augmented to at most S x S) are only padded.
        size (`dict[str, int]` or `int`, *optional*, defaults to `{"longest_edge": 1024}`):
            S, the side of the square model input; must equal the SAM encoder's `image_size` (128 for the tiny preset).
        resample (`int`, *optional*, defaults to `PILImageResampling.BILINEAR`):
            PIL filter used to resize images (annotations always use nearest neighbour).
        do_rescale (`bool`, *optional*, defaults to `False`):
            Multiply the 0-255 pixel values by `rescale_factor` before normalizing. PosSAM's default normalizes on the
            0-255 scale instead; `do_rescale=True, rescale_factor=1/255` with `image_mean=(0.485, 0.456, 0.406)`,
            `image_std=(0.229, 0.224, 0.225)` (transformers' SAM convention) gives the same pixel values.
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            The factor `do_rescale` applies.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Normalize with `image_mean` and `image_std`.
        image_mean, image_std (`list[float]`, *optional*, default to SAM's (123.675, 116.28, 103.53) and
            (58.395, 57.12, 57.375)):
            Per-channel normalization, on the scale of the (possibly rescaled) pixel values.
        do_convert_rgb (`bool`, *optional*, defaults to `True`):
            Convert images to RGB (grey images are repeated, transparency is composited onto white). With `False`,
            images must already have 3 channels (an RGB PIL image or a 3-channel array).
        do_pad (`bool`, *optional*, defaults to `True`):
            Pad to S x S. With `False`, `pixel_values` keep the resized size (all images of a batch must share it);
            the SAM encoder itself only accepts S x S.
    """

    valid_kwargs = PosSamImageProcessorKwargs
    model_input_names = ["pixel_values", "pixel_mask"]

    do_resize = True
    size = {"longest_edge": 1024}
    resample = PILImageResampling.BILINEAR
    do_rescale = False
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = list(SAM_IMAGE_MEAN)
    image_std = list(SAM_IMAGE_STD)
    do_convert_rgb = True
    do_pad = True

    def _standardize_kwargs(self, size=None, image_mean=None, image_std=None, resample=None, **kwargs) -> dict:
        if size is not None:
            size = {"longest_edge": self._longest_edge(size)}
        for name, values in (("image_mean", image_mean), ("image_std", image_std)):
            if values is not None and (isinstance(values, (int, float)) or len(values) != 3):
                raise ValueError(f"{name} must have 3 values (RGB), got {values!r}.")
        if image_std is not None and any(float(v) <= 0 for v in image_std):
            raise ValueError(f"image_std must be positive, got {image_std!r}.")
        kwargs.update(
            size=size,
            image_mean=None if image_mean is None else [float(v) for v in image_mean],
            image_std=None if image_std is None else [float(v) for v in image_std],
            resample=None if resample is None else int(resample),
        )
        return kwargs

    @staticmethod
    def _longest_edge(size) -> int:
        if isinstance(size, Mapping):
            if set(size) != {"longest_edge"}:
                raise ValueError(f"size must be {{'longest_edge': S}} (PosSAM pads to a square), got {dict(size)}.")
            size = size["longest_edge"]
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"size must be a positive int or {{'longest_edge': S}}, got {size!r}.")
        return int(size)

    @property
    def padded_size(self) -> int:
        """S, the side of the square model input."""
        return self.size["longest_edge"]

    def to_dict(self) -> dict:
        """The saved settings, with the `auto_map` that lets `AutoImageProcessor` load them without `import possam`."""
        return {**super().to_dict(), "auto_map": dict(IMAGE_PROCESSOR_AUTO_MAP)}

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Writes `preprocessor_config.json` and the remote-code module its `auto_map` names."""
        write_remote_code(save_directory, IMAGE_PROCESSOR_AUTO_MAP)
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def preprocess(
        self,
        images,
        annotations: Sequence[Mapping] | Mapping | None = None,
        *,
        category_to_label: Mapping[int, int] | None = None,
        num_labels: int | None = None,
        do_resize: bool | None = None,
        size: dict[str, int] | int | None = None,
        resample: int | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        do_convert_rgb: bool | None = None,
        do_pad: bool | None = None,
        input_data_format: str | ChannelDimension | None = None,
        data_format: str | ChannelDimension | None = ChannelDimension.FIRST,
        return_tensors: str | None = "pt",
        timeout: float | None = None,
    ) -> BatchFeature:
        """Prepares a batch of images, and their training targets when `annotations` are given.

        Args:
            images: one image or a list (see `possam.processing.image_inputs`): PIL images, file paths, http(s) URLs,
                numpy arrays or torch tensors ((H, W), (H, W, C) or (C, H, W); uint8, or floats in [0, 1] or
                [0, 255]).
            annotations: one annotation dict per image (panoptic, instance or semantic; see
                `possam.processing.annotations`).
            category_to_label: dataset category id -> contiguous label id, for `category_id` fields, instance classes
                and semantic map values (without it, those are taken as label ids). Unknown ids raise an error.
            num_labels: when given, label ids must be < num_labels.
            do_resize, size, resample, do_rescale, rescale_factor, do_normalize, image_mean, image_std,
                do_convert_rgb, do_pad: override the processor's settings.
            input_data_format: `"channels_first"` or `"channels_last"`: the layout of 3-D array and tensor inputs;
                inferred when `None` (numpy arrays prefer (H, W, C), tensors (C, H, W)).
            data_format: `"channels_first"` (default, (B, 3, S, S)) or `"channels_last"` ((B, S, S, 3)) for
                `pixel_values`.
            return_tensors: `"pt"` (default) or `"np"`.
            timeout: seconds to wait for an image URL.

        Returns:
            [`BatchFeature`] with `pixel_values` (B, 3, S, S) float32, `pixel_mask` (B, S, S) int64 (1 = image,
            0 = padding), `original_sizes` (B, 2) and `reshaped_input_sizes` (B, 2) int64 as (height, width); with
            annotations also `mask_labels` (list of (N_i, S, S) float32), `class_labels` (list of (N_i,) int64) and
            `ignore_mask` (B, S, S) bool (True on crowd, void and padding pixels).
        """
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}.")
        input_data_format = _channel_dimension(input_data_format, "input_data_format")
        data_format = _channel_dimension(data_format, "data_format") or ChannelDimension.FIRST
        options = self._standardize_kwargs(size=size, image_mean=image_mean, image_std=image_std, resample=resample)
        longest_edge = options["size"]["longest_edge"] if size is not None else self.padded_size
        do_resize = self.do_resize if do_resize is None else do_resize
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = float(self.rescale_factor if rescale_factor is None else rescale_factor)
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        do_convert_rgb = self.do_convert_rgb if do_convert_rgb is None else do_convert_rgb
        do_pad = self.do_pad if do_pad is None else do_pad
        mean = np.asarray(options["image_mean"] or self.image_mean, dtype=np.float32)
        std = np.asarray(options["image_std"] or self.image_std, dtype=np.float32)
        resample = options["resample"] if options["resample"] is not None else int(self.resample)

        image_list = as_image_list(images)
        if annotations is not None:
            annotations = [annotations] if isinstance(annotations, Mapping) else list(annotations)
            if len(annotations) != len(image_list):
                raise ValueError(
                    f"Got {len(image_list)} images but {len(annotations)} annotations; give one per image."
                )
            if not do_pad:
                raise ValueError("Training targets are built on the padded S x S input: annotations need do_pad=True.")

        arrays, original_sizes, reshaped_sizes = [], [], []
        for index, image in enumerate(image_list):
            where = f"images[{index}]" if len(image_list) > 1 or isinstance(images, (list, tuple)) else "images"
            image = _channels_last(image, input_data_format)
            if isinstance(image, str) and image.startswith(("http://", "https://")):
                image = fetch_image(image, where, timeout)
            if not do_convert_rgb:
                _check_rgb(image, where)
            array = load_image(image, where)
            height, width = array.shape[:2]
            if do_resize:
                new_height, new_width = longest_edge_resize_shape(height, width, longest_edge)
                array = self._resize(array, (new_height, new_width), resample)
            elif height > longest_edge or width > longest_edge:
                raise ValueError(
                    f"{where}: with do_resize=False the image must fit in {longest_edge}x{longest_edge}, got "
                    f"{height}x{width}."
                )
            new_height, new_width = array.shape[:2]
            array = array.astype(np.float32)
            if do_rescale:
                array = array * np.float32(rescale_factor)
            if do_normalize:
                array = (array - mean) / std
            arrays.append(array.transpose(2, 0, 1))
            original_sizes.append((height, width))
            reshaped_sizes.append((new_height, new_width))

        if do_pad:
            canvas = (longest_edge, longest_edge)
        elif len(set(reshaped_sizes)) == 1:
            canvas = reshaped_sizes[0]
        else:
            raise ValueError(
                f"With do_pad=False the images of a batch must have the same size after resizing, got {reshaped_sizes}."
            )
        pixel_values = np.zeros((len(arrays), 3, *canvas), dtype=np.float32)
        pixel_mask = np.zeros((len(arrays), *canvas), dtype=np.int64)
        for index, array in enumerate(arrays):
            new_height, new_width = array.shape[1:]
            pixel_values[index, :, :new_height, :new_width] = array
            pixel_mask[index, :new_height, :new_width] = 1
        if data_format == ChannelDimension.LAST:
            pixel_values = np.ascontiguousarray(pixel_values.transpose(0, 2, 3, 1))

        data = {
            "pixel_values": torch.from_numpy(pixel_values),
            "pixel_mask": torch.from_numpy(pixel_mask),
            "original_sizes": torch.tensor(original_sizes, dtype=torch.int64),
            "reshaped_input_sizes": torch.tensor(reshaped_sizes, dtype=torch.int64),
        }
        if annotations is not None:
            mask_labels, class_labels, ignore_masks = [], [], []
            for index, annotation in enumerate(annotations):
                layout = parse_annotation(annotation, category_to_label, num_labels, where=f"annotations[{index}]")
                if layout.id_map.shape != original_sizes[index]:
                    raise ValueError(
                        f"annotations[{index}]: the map is {layout.id_map.shape[0]}x{layout.id_map.shape[1]} but its "
                        f"image is {original_sizes[index][0]}x{original_sizes[index][1]}."
                    )
                masks, labels, ignore = layout_to_targets(layout, reshaped_sizes[index], longest_edge)
                mask_labels.append(masks)
                class_labels.append(labels)
                ignore_masks.append(ignore)
            data.update(mask_labels=mask_labels, class_labels=class_labels, ignore_mask=torch.stack(ignore_masks))
        if return_tensors == "np":
            data = {k: [t.numpy() for t in v] if isinstance(v, list) else v.numpy() for k, v in data.items()}
        return BatchFeature(data=data)

    @staticmethod
    def _resize(array: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
        """Resizes an (H, W, 3) array with PIL: in RGB mode for uint8 (as SAM), per channel in float mode otherwise."""
        height, width = size
        if array.shape[:2] == (height, width):
            return array
        if array.dtype == np.uint8:
            return np.asarray(PIL.Image.fromarray(array).resize((width, height), resample=resample))
        channels = [
            np.asarray(
                PIL.Image.fromarray(np.ascontiguousarray(array[..., c])).resize((width, height), resample=resample)
            )
            for c in range(3)
        ]
        return np.stack(channels, axis=-1)

    def prepare_training_example(
        self,
        image,
        annotation: Mapping,
        category_to_label: Mapping[int, int] | None = None,
        num_labels: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """One already-augmented example (image at most S x S, annotation of the same size) -> unbatched tensors.

        Nothing is resized (the training augmentation chose the scale); the image is normalized and padded to S x S.
        Returns `pixel_values` (3, S, S), `pixel_mask` (S, S), `mask_labels` (N, S, S), `class_labels` (N,) and
        `ignore_mask` (S, S).
        """
        batch = self.preprocess(
            [image], [annotation], category_to_label=category_to_label, num_labels=num_labels, do_resize=False
        )
        return {
            "pixel_values": batch["pixel_values"][0],
            "pixel_mask": batch["pixel_mask"][0],
            "mask_labels": batch["mask_labels"][0],
            "class_labels": batch["class_labels"][0],
            "ignore_mask": batch["ignore_mask"][0],
        }

    def post_process_panoptic_segmentation(
        self,
        outputs,
        threshold: float = 0.0,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: Iterable[int] | None = None,
        target_sizes=None,
        reshaped_input_sizes=None,
        ensemble_mode: str | None = None,
        seen_classes: torch.Tensor | None = None,
        config=None,
        return_coco_annotation: bool = False,
    ) -> list[dict]:
        """See [`possam.processing.postprocessing.post_process_panoptic_segmentation`]; S is this processor's size.

        With `return_coco_annotation=True`, each result's `segmentation` is a list of COCO RLEs
        (`{"size": [H, W], "counts": str}`, `pycocotools.mask.decode` reads them), one per entry of `segments_info`
        in its order, instead of the (H, W) id map (the same switch as Mask2Former's post-processing; Mask2Former
        encodes with its own run-length format, PosSAM with COCO's).
        """
        results = postprocessing.post_process_panoptic_segmentation(
            outputs,
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold,
            label_ids_to_fuse=label_ids_to_fuse,
            target_sizes=target_sizes,
            padded_size=self.padded_size,
            reshaped_input_sizes=reshaped_input_sizes,
            ensemble_mode=ensemble_mode,
            seen_classes=seen_classes,
            config=config,
        )
        if return_coco_annotation:
            for result in results:
                result["segmentation"] = encode_segments(result["segmentation"], result["segments_info"])
        return results

    def post_process_instance_segmentation(
        self,
        outputs,
        threshold: float = 0.0,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float | None = None,
        target_sizes=None,
        return_binary_maps: bool = False,
        top_k: int = 100,
        stuff_label_ids: Iterable[int] | None = None,
        reshaped_input_sizes=None,
        ensemble_mode: str | None = None,
        seen_classes: torch.Tensor | None = None,
        config=None,
        return_coco_annotation: bool = False,
    ) -> list[dict]:
        """See [`possam.processing.postprocessing.post_process_instance_segmentation`]; S is this processor's size.

        With `return_coco_annotation=True`, each result's `segmentation` is a list of COCO RLEs of the instances'
        own (possibly overlapping) masks, one per entry of `segments_info` in its order.
        """
        results = postprocessing.post_process_instance_segmentation(
            outputs,
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold,
            target_sizes=target_sizes,
            return_binary_maps=return_binary_maps or return_coco_annotation,
            top_k=top_k,
            stuff_label_ids=stuff_label_ids,
            padded_size=self.padded_size,
            reshaped_input_sizes=reshaped_input_sizes,
            ensemble_mode=ensemble_mode,
            seen_classes=seen_classes,
            config=config,
        )
        if return_coco_annotation:
            for result in results:
                result["segmentation"] = encode_masks(result["segmentation"])
        return results

    def post_process_prompt_segmentation(
        self,
        outputs,
        labels,
        mask_threshold: float = 0.0,
        target_sizes=None,
        reshaped_input_sizes=None,
        ensemble_mode: str | None = None,
        seen_classes=None,
        config=None,
    ) -> list[list[dict]]:
        """See [`possam.processing.postprocessing.post_process_prompt_segmentation`]; S is this processor's size."""
        return postprocessing.post_process_prompt_segmentation(
            outputs,
            labels,
            mask_threshold=mask_threshold,
            target_sizes=target_sizes,
            padded_size=self.padded_size,
            reshaped_input_sizes=reshaped_input_sizes,
            ensemble_mode=ensemble_mode,
            seen_classes=seen_classes,
            config=config,
        )

    def post_process_semantic_segmentation(
        self,
        outputs,
        target_sizes=None,
        reshaped_input_sizes=None,
        ensemble_mode: str | None = None,
        seen_classes: torch.Tensor | None = None,
        config=None,
    ) -> list[torch.Tensor]:
        """See [`possam.processing.postprocessing.post_process_semantic_segmentation`]; S is this processor's size."""
        return postprocessing.post_process_semantic_segmentation(
            outputs,
            target_sizes=target_sizes,
            padded_size=self.padded_size,
            reshaped_input_sizes=reshaped_input_sizes,
            ensemble_mode=ensemble_mode,
            seen_classes=seen_classes,
            config=config,
        )


def _channel_dimension(value, name: str) -> ChannelDimension | None:
    if value is None:
        return None
    try:
        dimension = ChannelDimension(value)
    except ValueError:
        dimension = None
    if dimension not in (ChannelDimension.FIRST, ChannelDimension.LAST):
        raise ValueError(f"{name} must be 'channels_first' or 'channels_last', got {value!r}.")
    return dimension


def _channels_last(image, input_data_format: ChannelDimension | None):
    """A 3-D array or tensor in the given layout -> (H, W, C), the layout `load_image` reads numpy arrays in."""
    if input_data_format is None or not isinstance(image, (np.ndarray, torch.Tensor)) or image.ndim != 3:
        return image
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = (image.float() if image.dtype in (torch.float16, torch.bfloat16) else image).numpy()
    return np.moveaxis(image, 0, -1) if input_data_format == ChannelDimension.FIRST else image


def _check_rgb(image, where: str) -> None:
    """`do_convert_rgb=False`: the image must already be RGB."""
    if isinstance(image, (str, os.PathLike)):
        try:
            with PIL.Image.open(image) as opened:  # reads the header only
                image = opened
        except (OSError, ValueError):
            return  # load_image reports unreadable files
    if isinstance(image, PIL.Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"{where}: do_convert_rgb=False needs RGB images, got a PIL image in mode {image.mode!r}.")
    elif isinstance(image, (np.ndarray, torch.Tensor)) and (image.ndim != 3 or 3 not in (image.shape[0], image.shape[-1])):
        raise ValueError(
            f"{where}: do_convert_rgb=False needs 3-channel images, got an array of shape {tuple(image.shape)}."
        )


def fetch_image(url: str, where: str, timeout: float | None = None) -> PIL.Image.Image:
    """Downloads an image URL with transformers' `load_image` (which also applies the EXIF orientation)."""
    from transformers.image_utils import load_image as load_url

    try:
        return load_url(url, timeout=timeout)
    except Exception as error:  # httpx and PIL raise many types; the message names the URL either way
        raise ValueError(f"{where}: cannot read image URL {url!r}: {error}") from None


__all__ = ["PosSamImageProcessor"]
