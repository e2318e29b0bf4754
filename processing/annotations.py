"""Training annotations: panoptic, instance or semantic maps to per-segment masks, contiguous labels, ignored pixels.

Each image's annotation is a dict in one of three forms (maps are `np.ndarray`, `torch.Tensor`, PIL images or paths):

- panoptic (COCO panoptic): `{"panoptic_map": ..., "segments_info": [{"id", "category_id" or "label_id",
  "iscrowd"}]}`. The map holds segment ids (H x W integers, or COCO's RGB PNG encoding id = R + 256 G + 256^2 B);
  id 0 is void. `category_id` is a dataset id, mapped through `category_to_label`; `label_id` is already contiguous.
- instance: `{"instance_map": ..., "instance_to_class": {instance_id: class_id}, "crowd_instance_ids": [...]}`;
  the map's `background_id` (default 0) is void unless it is listed in `instance_to_class`.
- semantic: `{"semantic_map": ..., "ignore_index": 255}`; one segment per class present.

Class ids of instance and semantic annotations are dataset ids mapped through `category_to_label` when it is given,
and contiguous label ids otherwise. Crowd segments and void pixels produce no mask label: they are marked in the
ignore mask, which the loss skips.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from .panoptic_png import rgb_to_segment_ids
from .resizing import nearest_indices


ANNOTATION_KINDS = {"panoptic_map": "panoptic", "instance_map": "instance", "semantic_map": "semantic"}


@dataclass
class SegmentLayout:
    """An annotation reduced to one integer map and the meaning of its values.

    Attributes:
        id_map: (H, W) int64 map of segment ids at the annotation's resolution.
        segment_ids: ids of the segments that become mask labels, in output order.
        labels: contiguous label id of each of those segments.
        ignored_ids: ids whose pixels the loss ignores (crowd, void); every other id in the map must be a segment.
    """

    id_map: np.ndarray
    segment_ids: list[int]
    labels: list[int]
    ignored_ids: set[int]


def _read_map(value, where: str) -> np.ndarray:
    """Reads a 2-D integer map; a 3-channel uint8 map is COCO's RGB encoding of panoptic ids."""
    if isinstance(value, (str, os.PathLike)):
        try:
            with PIL.Image.open(value) as image:
                value = np.array(image)
        except (OSError, ValueError) as error:
            raise ValueError(f"{where}: cannot read the map file {os.fspath(value)!r}: {error}") from None
    elif isinstance(value, PIL.Image.Image):
        value = np.array(value)
    elif isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    elif not isinstance(value, np.ndarray):
        raise TypeError(
            f"{where}: expected a 2-D map (numpy array, torch tensor, PIL image or path), got {type(value).__name__}."
        )
    if value.ndim == 3 and value.shape[-1] == 3 and value.dtype == np.uint8:
        value = rgb_to_segment_ids(value)
    if value.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D (height, width) map, got shape {tuple(value.shape)}.")
    if not (np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_):
        if not np.issubdtype(value.dtype, np.floating) or not np.all(np.mod(value, 1) == 0):
            raise ValueError(f"{where}: expected integer ids, got dtype {value.dtype} with non-integer values.")
    return value.astype(np.int64)


def _to_label(class_id: int, category_to_label: Mapping[int, int] | None, num_labels: int | None, where: str) -> int:
    class_id = int(class_id)
    if category_to_label is not None:
        if class_id not in category_to_label:
            raise ValueError(
                f"{where}: category id {class_id} is not in category_to_label (known ids: "
                f"{sorted(category_to_label)[:20]}{' ...' if len(category_to_label) > 20 else ''})."
            )
        label = int(category_to_label[class_id])
    else:
        label = class_id
    if label < 0 or (num_labels is not None and label >= num_labels):
        raise ValueError(
            f"{where}: label id {label} is outside [0, {num_labels if num_labels is not None else 'inf'})."
        )
    return label


def _panoptic_layout(annotation, category_to_label, num_labels, where) -> SegmentLayout:
    id_map = _read_map(annotation["panoptic_map"], f"{where}['panoptic_map']")
    segments_info = annotation.get("segments_info")
    if not isinstance(segments_info, Sequence) or isinstance(segments_info, str):
        raise ValueError(
            f"{where}: a panoptic annotation needs 'segments_info', a list of {{'id', 'category_id'}} dicts."
        )
    segment_ids, labels, ignored, seen = [], [], {0}, set()
    for index, segment in enumerate(segments_info):
        here = f"{where}['segments_info'][{index}]"
        if not isinstance(segment, Mapping) or "id" not in segment:
            raise ValueError(f"{here}: expected a dict with 'id' and 'category_id' (or 'label_id'), got {segment!r}.")
        segment_id = int(segment["id"])
        if segment_id in seen:
            raise ValueError(f"{here}: duplicate segment id {segment_id}.")
        if segment_id == 0:
            raise ValueError(f"{here}: segment id 0 is reserved for void pixels.")
        seen.add(segment_id)
        if segment.get("iscrowd", 0):
            ignored.add(segment_id)
            continue
        if "label_id" in segment:
            label = _to_label(segment["label_id"], None, num_labels, here)
        elif "category_id" in segment:
            if category_to_label is None:
                raise ValueError(
                    f"{here}: 'category_id' needs category_to_label (dataset id -> contiguous label id); or give "
                    "'label_id' instead."
                )
            label = _to_label(segment["category_id"], category_to_label, num_labels, here)
        else:
            raise ValueError(f"{here}: expected 'category_id' or 'label_id', got keys {sorted(segment)}.")
        segment_ids.append(segment_id)
        labels.append(label)
    return SegmentLayout(id_map, segment_ids, labels, ignored)


def _instance_layout(annotation, category_to_label, num_labels, where) -> SegmentLayout:
    id_map = _read_map(annotation["instance_map"], f"{where}['instance_map']")
    mapping = annotation.get("instance_to_class")
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{where}: an instance annotation needs 'instance_to_class', a dict instance id -> class id.")
    crowd = {int(i) for i in annotation.get("crowd_instance_ids", ())}
    background = annotation.get("background_id", 0)
    ignored = set(crowd)
    if background is not None and int(background) not in mapping:
        ignored.add(int(background))
    segment_ids, labels = [], []
    for instance_id, class_id in mapping.items():
        if int(instance_id) in crowd:
            continue
        segment_ids.append(int(instance_id))
        labels.append(
            _to_label(class_id, category_to_label, num_labels, f"{where}['instance_to_class'][{instance_id}]")
        )
    return SegmentLayout(id_map, segment_ids, labels, ignored)


def _semantic_layout(annotation, category_to_label, num_labels, where) -> SegmentLayout:
    class_map = _read_map(annotation["semantic_map"], f"{where}['semantic_map']")
    ignore_index = annotation.get("ignore_index", 255)
    values, inverse = np.unique(class_map, return_inverse=True)
    # Re-express the map in label ids (-1 = ignored), so that dataset ids mapped to the same label give one mask.
    labels = np.array(
        [
            -1
            if ignore_index is not None and int(v) == int(ignore_index)
            else _to_label(v, category_to_label, num_labels, f"{where}['semantic_map'] value")
            for v in values
        ],
        dtype=np.int64,
    )
    label_map = labels[inverse.reshape(class_map.shape)]
    present = sorted(set(labels.tolist()) - {-1})
    return SegmentLayout(label_map, present, present, {-1})


def parse_annotation(
    annotation: Mapping,
    category_to_label: Mapping[int, int] | None = None,
    num_labels: int | None = None,
    where: str = "annotation",
) -> SegmentLayout:
    """Validates one annotation (see the module docstring) and reduces it to a [`SegmentLayout`]."""
    if not isinstance(annotation, Mapping):
        raise TypeError(f"{where}: expected a dict, got {type(annotation).__name__}.")
    kinds = [key for key in ANNOTATION_KINDS if key in annotation]
    if len(kinds) != 1:
        raise ValueError(
            f"{where}: expected exactly one of {list(ANNOTATION_KINDS)} (panoptic, instance or semantic), got keys "
            f"{sorted(annotation)}."
        )
    builder = {"panoptic": _panoptic_layout, "instance": _instance_layout, "semantic": _semantic_layout}
    layout = builder[ANNOTATION_KINDS[kinds[0]]](annotation, category_to_label, num_labels, where)
    unknown = set(np.unique(layout.id_map).tolist()) - set(layout.segment_ids) - layout.ignored_ids
    if unknown:
        raise ValueError(
            f"{where}: the map contains ids {sorted(unknown)[:20]} that the annotation does not describe (not a "
            "segment, not crowd, not void)."
        )
    return layout


def layout_to_targets(
    layout: SegmentLayout, resized_size: tuple[int, int], padded_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Builds the training targets of one image on the padded S x S canvas.

    The id map is resized with nearest neighbour to the size its image was resized to, then padded. Segments that no
    pixel survives for are dropped (they are not visible to the model).

    Returns:
        mask_labels: (N, S, S) float32 binary masks; class_labels: (N,) int64; ignore_mask: (S, S) bool, True on
        crowd, void and padding pixels.
    """
    height, width = layout.id_map.shape
    new_height, new_width = resized_size
    if new_height > padded_size or new_width > padded_size:
        raise ValueError(
            f"The annotation of size {(height, width)} resized to {tuple(resized_size)} does not fit the padded size "
            f"{padded_size}."
        )
    id_map = torch.from_numpy(layout.id_map)
    if (new_height, new_width) != (height, width):
        id_map = id_map[nearest_indices(height, new_height)][:, nearest_indices(width, new_width)]
    canvas_ids = torch.as_tensor(layout.segment_ids, dtype=torch.int64)
    masks = torch.zeros((len(layout.segment_ids), padded_size, padded_size), dtype=torch.bool)
    masks[:, :new_height, :new_width] = id_map[None] == canvas_ids[:, None, None]
    present = masks.flatten(1).any(1)
    ignore_mask = torch.ones((padded_size, padded_size), dtype=torch.bool)
    ignore_mask[:new_height, :new_width] = torch.isin(
        id_map, torch.as_tensor(sorted(layout.ignored_ids), dtype=torch.int64)
    )
    class_labels = torch.as_tensor(layout.labels, dtype=torch.int64)
    return masks[present].float(), class_labels[present], ignore_mask
