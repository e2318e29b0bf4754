"""Image processor of PosSAM: SAM's longest-edge resize, normalization and bottom/right padding, training targets,
and the post-processing of model outputs (PIL/numpy backend, no torchvision)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypedDict

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling

from ..configuration.configuration_possam import SAM_IMAGE_MEAN, SAM_IMAGE_STD
from . import postprocessing
from .annotations import layout_to_targets, parse_annotation
from .image_inputs import as_image_list, load_image
from .resizing import longest_edge_resize_shape


class PosSamImageProcessorKwargs(TypedDict, total=False):
    """Options of [`PosSamImageProcessor`], saved in `preprocessor_config.json`."""

    do_resize: bool
    size: dict[str, int] | int
    resample: int
    do_normalize: bool
    image_mean: list[float] | tuple[float, ...]
    image_std: list[float] | tuple[float, ...]


class PosSamImageProcessor(PilBackend):
    r"""
    Prepares images for [`PosSamModel`] as SAM does: the longest edge is resized to `size["longest_edge"]` (S,
    bilinear), pixels are normalized on the 0-255 scale with SAM's ImageNet mean/std, and the image is padded with
    zeros (after normalization) at the bottom and right to S x S. Optionally turns panoptic, instance or semantic
    annotations into the training targets (`mask_labels`, `class_labels`, `ignore_mask`), and post-processes model
    outputs into panoptic, instance or semantic segmentations at the original image size.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Resize the longest edge to S. When `False`, images (already augmented to at most S x S) are only padded.
        size (`dict[str, int]` or `int`, *optional*, defaults to `{"longest_edge": 1024}`):
            S, the side of the square model input; must equal the SAM encoder's `image_size` (128 for the tiny preset).
        resample (`int`, *optional*, defaults to `PILImageResampling.BILINEAR`):
            PIL filter used to resize images (annotations always use nearest neighbour).
        do_normalize (`bool`, *optional*, defaults to `True`):
            Normalize with `image_mean` and `image_std`.
        image_mean, image_std (`list[float]`, *optional*, default to SAM's (123.675, 116.28, 103.53) and
            (58.395, 57.12, 57.375)):
            Per-channel normalization on the 0-255 scale.
    """

    valid_kwargs = PosSamImageProcessorKwargs
    model_input_names = ["pixel_values", "pixel_mask"]

    do_resize = True
    size = {"longest_edge": 1024}
    resample = PILImageResampling.BILINEAR
    do_normalize = True
    image_mean = list(SAM_IMAGE_MEAN)
    image_std = list(SAM_IMAGE_STD)

    def _standardize_kwargs(self, size=None, image_mean=None, image_std=None, resample=None, **kwargs) -> dict:
        if size is not None:
            size = {"longest_edge": self._longest_edge(size)}
        for name, values in (("image_mean", image_mean), ("image_std", image_std)):
            if values is not None and (isinstance(values, (int, float)) or len(values) != 3):
                raise ValueError(f"{name} must have 3 values (RGB, on the 0-255 scale), got {values!r}.")
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
        do_normalize: bool | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Prepares a batch of images, and their training targets when `annotations` are given.

        Args:
            images: one image or a list (see `possam.processing.image_inputs`): PIL images, file paths, numpy arrays
                or torch tensors ((H, W), (H, W, C) or (C, H, W); uint8, or floats in [0, 1] or [0, 255]).
            annotations: one annotation dict per image (panoptic, instance or semantic; see
                `possam.processing.annotations`).
            category_to_label: dataset category id -> contiguous label id, for `category_id` fields, instance classes
                and semantic map values (without it, those are taken as label ids). Unknown ids raise an error.
            num_labels: when given, label ids must be < num_labels.
            do_resize, size, resample, do_normalize, image_mean, image_std: override the processor's settings.
            return_tensors: `"pt"` (default) or `"np"`.

        Returns:
            [`BatchFeature`] with `pixel_values` (B, 3, S, S) float32, `pixel_mask` (B, S, S) int64 (1 = image,
            0 = padding), `original_sizes` (B, 2) and `reshaped_input_sizes` (B, 2) int64 as (height, width); with
            annotations also `mask_labels` (list of (N_i, S, S) float32), `class_labels` (list of (N_i,) int64) and
            `ignore_mask` (B, S, S) bool (True on crowd, void and padding pixels).
        """
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}.")
        options = self._standardize_kwargs(size=size, image_mean=image_mean, image_std=image_std, resample=resample)
        longest_edge = options["size"]["longest_edge"] if size is not None else self.padded_size
        do_resize = self.do_resize if do_resize is None else do_resize
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
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

        pixel_values = np.zeros((len(image_list), 3, longest_edge, longest_edge), dtype=np.float32)
        pixel_mask = np.zeros((len(image_list), longest_edge, longest_edge), dtype=np.int64)
        original_sizes, reshaped_sizes = [], []
        for index, image in enumerate(image_list):
            where = f"images[{index}]" if len(image_list) > 1 or isinstance(images, (list, tuple)) else "images"
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
            if do_normalize:
                array = (array - mean) / std
            pixel_values[index, :, :new_height, :new_width] = array.transpose(2, 0, 1)
            pixel_mask[index, :new_height, :new_width] = 1
            original_sizes.append((height, width))
            reshaped_sizes.append((new_height, new_width))

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
    ) -> list[dict]:
        """See [`possam.processing.postprocessing.post_process_panoptic_segmentation`]; S is this processor's size."""
        return postprocessing.post_process_panoptic_segmentation(
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
    ) -> list[dict]:
        """See [`possam.processing.postprocessing.post_process_instance_segmentation`]; S is this processor's size."""
        return postprocessing.post_process_instance_segmentation(
            outputs,
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold,
            target_sizes=target_sizes,
            return_binary_maps=return_binary_maps,
            top_k=top_k,
            stuff_label_ids=stuff_label_ids,
            padded_size=self.padded_size,
            reshaped_input_sizes=reshaped_input_sizes,
            ensemble_mode=ensemble_mode,
            seen_classes=seen_classes,
            config=config,
        )

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


__all__ = ["PosSamImageProcessor"]
