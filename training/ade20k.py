"""Converts ADE20K (ADEChallengeData2016 + its instance annotations) into COCO panoptic format.

Input layout (the official release plus the instance-segmentation annotations of the same challenge):

    <ade_root>/images/{training,validation}/ADE_*.jpg
    <ade_root>/annotations/{training,validation}/ADE_*.png            semantic map: 0 = void, v in 1..150 = class v
    <ade_root>/annotations_instance/{training,validation}/ADE_*.png   RGB: R = instance class (1..100), G = instance
                                                                      id (0 = none, unique within an image)

Facts this converter relies on:
- The 150 classes are those of `ade20k_150` (dataset ids 0..149): semantic value v is dataset id v - 1.
- The 100 instance classes are exactly the 100 thing classes of the 150, numbered 1..100 in the order of their
  150-class ids (ADE20K's `ade20k_instance_catid_mapping.txt`: 1 -> 8, 2 -> 9, 3 -> 11, ..., 100 -> 150), so instance
  class k is the k-th thing class of the vocabulary.

Output, under `output_dir`: `ade20k_panoptic_{train,val}.json` and the PNG folder `ade20k_panoptic_{train,val}/`.
Stuff classes give one segment per class from the semantic map; things give one segment per instance and are
painted over stuff (the two annotations overlap slightly). Thing-class pixels without an instance stay void.
The images are not copied: load the result with `load_coco_panoptic(json, image_dir=<ade_root>/images/<split>)`.
"""

from __future__ import annotations

import colorsys
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..configuration import Vocabulary, load_vocabulary
from ..processing.panoptic_png import segment_area_and_bbox, segment_ids_to_rgb


NUM_ADE20K_CLASSES = 150
_SPLITS = {"training": "train", "train": "train", "validation": "val", "val": "val"}
_INSTANCE_STRIDE = 256  # thing segment id = (category id + 1) + 256 * instance id: readable and unique per image


class ADE20KConversionError(ValueError):
    """The ADE20K input files are missing or inconsistent."""


@dataclass(frozen=True)
class ConvertedPanopticSplit:
    """Where a converted split was written."""

    json_path: str
    panoptic_dir: str
    image_dir: str
    num_images: int


def ade20k_instance_to_category(vocabulary: Vocabulary | None = None) -> dict[int, int]:
    """Maps an instance class (R channel, 1..100) to its dataset category id (0..149)."""
    vocabulary = vocabulary or load_vocabulary("ade20k_150")
    things = [dataset_id for dataset_id, thing in zip(vocabulary.dataset_ids, vocabulary.is_thing) if thing]
    return {instance_class: dataset_id for instance_class, dataset_id in enumerate(things, start=1)}


def _category_color(index: int) -> list[int]:
    # Golden-angle hues: well separated colours for visualisation, no palette table needed.
    red, green, blue = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.65, 0.95)
    return [int(round(255 * red)), int(round(255 * green)), int(round(255 * blue))]


def _open(path: str, kind: str) -> Image.Image:
    if not os.path.isfile(path):
        raise ADE20KConversionError(f"Missing {kind} {path!r}.")
    return Image.open(path)


def _convert_one(
    stem: str,
    image_path: str,
    semantic_path: str,
    instance_path: str,
    panoptic_path: str,
    is_thing: list[bool],
    instance_to_category: dict[int, int],
) -> tuple[dict, dict]:
    """Converts one image's annotations; writes its panoptic PNG and returns its (image, annotation) JSON entries."""
    image = _open(image_path, "image")
    semantic_image = _open(semantic_path, "semantic annotation")
    instance_image = _open(instance_path, "instance annotation")
    for kind, path, other in (
        ("semantic", semantic_path, semantic_image),
        ("instance", instance_path, instance_image),
    ):
        if other.size != image.size:
            raise ADE20KConversionError(
                f"The {kind} annotation {path!r} is {other.size[0]}x{other.size[1]} (WxH) but the image "
                f"{image_path!r} is {image.size[0]}x{image.size[1]}."
            )
    if semantic_image.mode not in ("L", "P"):
        raise ADE20KConversionError(
            f"The semantic annotation {semantic_path!r} has mode {semantic_image.mode!r}; expected a single-channel "
            "8-bit map (0 = void, 1..150 = class)."
        )
    if instance_image.mode != "RGB":
        raise ADE20KConversionError(
            f"The instance annotation {instance_path!r} has mode {instance_image.mode!r}; expected RGB "
            "(R = instance class, G = instance id)."
        )
    semantic = np.asarray(semantic_image).astype(np.int64)
    if semantic.max(initial=0) > NUM_ADE20K_CLASSES:
        raise ADE20KConversionError(
            f"The semantic annotation {semantic_path!r} has value {semantic.max()}; expected 0 (void) to "
            f"{NUM_ADE20K_CLASSES}."
        )
    instance = np.asarray(instance_image).astype(np.int64)
    instance_class, instance_id = instance[..., 0], instance[..., 1]

    height, width = semantic.shape
    segment_ids = np.zeros((height, width), dtype=np.int64)
    categories: dict[int, int] = {}  # segment id -> dataset category id
    for value in np.unique(semantic):
        category_id = int(value) - 1
        if value == 0 or is_thing[category_id]:
            continue
        segment_ids[semantic == value] = category_id + 1
        categories[category_id + 1] = category_id
    for instance_number in np.unique(instance_id):
        if instance_number == 0:
            continue
        mask = instance_id == instance_number
        classes = np.unique(instance_class[mask])
        if classes.size != 1 or int(classes[0]) not in instance_to_category:
            raise ADE20KConversionError(
                f"Instance {int(instance_number)} of {instance_path!r} has instance class(es) {classes.tolist()}; "
                f"expected exactly one class in 1..{len(instance_to_category)}."
            )
        category_id = instance_to_category[int(classes[0])]
        segment_id = category_id + 1 + _INSTANCE_STRIDE * int(instance_number)
        segment_ids[mask] = segment_id
        categories[segment_id] = category_id

    segments_info = []
    for segment_id, category_id in categories.items():
        mask = segment_ids == segment_id
        if not mask.any():  # a stuff region entirely covered by instances
            continue
        area, bbox = segment_area_and_bbox(mask)
        segments_info.append({"id": segment_id, "category_id": category_id, "area": area, "bbox": bbox, "iscrowd": 0})
    Image.fromarray(segment_ids_to_rgb(segment_ids)).save(panoptic_path)
    image_entry = {"id": stem, "file_name": os.path.basename(image_path), "width": width, "height": height}
    annotation = {"image_id": stem, "file_name": os.path.basename(panoptic_path), "segments_info": segments_info}
    return image_entry, annotation


def convert_ade20k_to_coco_panoptic(
    ade_root: str | os.PathLike,
    output_dir: str | os.PathLike,
    split: str = "validation",
    num_workers: int = 1,
) -> ConvertedPanopticSplit:
    """Converts one ADE20K split to COCO panoptic format (150 classes, category ids 0..149).

    Args:
        ade_root: the `ADEChallengeData2016` folder (with `images/`, `annotations/`, `annotations_instance/`).
        output_dir: where to write `ade20k_panoptic_<train|val>.json` and the `ade20k_panoptic_<train|val>/` PNGs.
        split: "training" / "train" or "validation" / "val".
        num_workers: processes converting images in parallel (1 = in this process).
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}.")
    folder = "training" if _SPLITS[split] == "train" else "validation"
    ade_root, output_dir = os.fspath(ade_root), os.fspath(output_dir)
    image_dir = os.path.join(ade_root, "images", folder)
    semantic_dir = os.path.join(ade_root, "annotations", folder)
    instance_dir = os.path.join(ade_root, "annotations_instance", folder)
    for kind, path in (
        ("images", image_dir),
        ("semantic annotations", semantic_dir),
        ("instance annotations", instance_dir),
    ):
        if not os.path.isdir(path):
            raise ADE20KConversionError(
                f"ADE20K {kind} folder {path!r} does not exist; expected the ADEChallengeData2016 layout "
                "images/, annotations/ and annotations_instance/ (the latter from the ADE20K instance annotations)."
            )
    stems = sorted(name[: -len(".jpg")] for name in os.listdir(image_dir) if name.endswith(".jpg"))
    if not stems:
        raise ADE20KConversionError(f"No .jpg images in {image_dir!r}.")

    vocabulary = load_vocabulary("ade20k_150")
    instance_to_category = ade20k_instance_to_category(vocabulary)
    name = f"ade20k_panoptic_{_SPLITS[split]}"
    panoptic_dir = os.path.join(output_dir, name)
    os.makedirs(panoptic_dir, exist_ok=True)
    jobs = [
        (
            stem,
            os.path.join(image_dir, f"{stem}.jpg"),
            os.path.join(semantic_dir, f"{stem}.png"),
            os.path.join(instance_dir, f"{stem}.png"),
            os.path.join(panoptic_dir, f"{stem}.png"),
            list(vocabulary.is_thing),
            instance_to_category,
        )
        for stem in stems
    ]
    if num_workers > 1:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            results = list(pool.map(_convert_one, *zip(*jobs), chunksize=16))
    else:
        results = [_convert_one(*job) for job in jobs]

    categories = [
        {"id": dataset_id, "name": names[0], "isthing": int(thing), "color": _category_color(index)}
        for index, (dataset_id, names, thing) in enumerate(
            zip(vocabulary.dataset_ids, vocabulary.class_names, vocabulary.is_thing)
        )
    ]
    json_path = os.path.join(output_dir, f"{name}.json")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "info": {"description": f"ADE20K {folder} in COCO panoptic format (150 classes)"},
                "images": [image for image, _ in results],
                "annotations": [annotation for _, annotation in results],
                "categories": categories,
            },
            handle,
        )
    return ConvertedPanopticSplit(json_path, panoptic_dir, image_dir, len(results))
