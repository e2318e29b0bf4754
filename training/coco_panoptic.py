"""COCO panoptic datasets (COCO, ADE20K converted by `ade20k.py`, the synthetic set) as lazy `datasets.Dataset`s.

Loading reads only the JSON: each row holds the image and panoptic PNG paths plus the segments' metadata. Pixels are
decoded one example at a time by `decode_panoptic_example`, so a 118k-image dataset loads in seconds and the decoding
cost is paid by the data loader workers.

The vocabulary comes from the JSON categories: contiguous label id i = the i-th category, its dataset id kept. Class
names can be replaced by the prompt-engineered names (with synonyms) of a shipped vocabulary, matched by dataset id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, Features, Value
from PIL import Image

from ..configuration import Vocabulary, load_vocabulary
from ..processing.panoptic_png import rgb_to_segment_ids


class PanopticDataError(ValueError):
    """A COCO panoptic dataset (JSON, image or PNG) is missing, malformed or inconsistent."""


SEGMENT_FEATURES = {
    "id": Value("int64"),
    "category_id": Value("int64"),
    "label_id": Value("int64"),
    "iscrowd": Value("int64"),
}
PANOPTIC_FEATURES = Features(
    {
        "image_id": Value("string"),
        "image_path": Value("string"),
        "panoptic_path": Value("string"),
        "width": Value("int64"),
        "height": Value("int64"),
        "segments_info": [SEGMENT_FEATURES],  # a list of structs (also on datasets 3.x, which has no `List`)
    }
)


@dataclass
class PanopticExample:
    """One decoded example.

    Attributes:
        image: the RGB image.
        segment_ids: (H, W) int64 segment-id map; 0 = void, other values are the `id`s of `segments_info`.
        segments_info: per segment `{"id", "category_id", "label_id", "iscrowd", "area"}`; `label_id` is the
            contiguous class index into the dataset's vocabulary, `area` the pixel count in `segment_ids`.
        image_id: the dataset's image id.
    """

    image: Image.Image
    segment_ids: np.ndarray
    segments_info: list[dict]
    image_id: str


def vocabulary_from_categories(
    categories: list[Mapping], synonyms_from: str | os.PathLike | Vocabulary | None = None, source: str = "categories"
) -> Vocabulary:
    """Builds the vocabulary of a COCO panoptic `categories` list (label id i = i-th category).

    Args:
        categories: `[{"id", "name", "isthing", ...}]` as in a COCO panoptic JSON.
        synonyms_from: optional vocabulary (shipped name such as "coco_panoptic" / "ade20k_150", a file, or a
            `Vocabulary`). A category whose dataset id appears there takes that entry's names (display name and
            synonyms, e.g. FC-CLIP's prompt-engineered "wall,walls,brick wall"); the JSON's thing flag is kept.
        source: where the categories come from, for error messages.
    """
    if not isinstance(categories, list) or not categories:
        raise PanopticDataError(f"{source}: 'categories' must be a non-empty list of category dicts.")
    names_by_id: dict[int, list[str]] = {}
    if synonyms_from is not None:
        shipped = synonyms_from if isinstance(synonyms_from, Vocabulary) else load_vocabulary(synonyms_from)
        names_by_id = {dataset_id: list(names) for dataset_id, names in zip(shipped.dataset_ids, shipped.class_names)}
    class_names, is_thing, dataset_ids = [], [], []
    for index, category in enumerate(categories):
        for key in ("id", "name", "isthing"):
            if key not in category:
                raise PanopticDataError(f"{source}: categories[{index}] has no '{key}' field: {dict(category)}.")
        dataset_id = int(category["id"])
        class_names.append(names_by_id.get(dataset_id, [str(category["name"]).strip()]))
        is_thing.append(bool(category["isthing"]))
        dataset_ids.append(dataset_id)
    if len(set(dataset_ids)) != len(dataset_ids):
        raise PanopticDataError(f"{source}: duplicate category ids in 'categories'.")
    return Vocabulary(class_names, is_thing, dataset_ids)


def _read_json(json_path: str) -> dict:
    if not os.path.isfile(json_path):
        raise PanopticDataError(f"Panoptic annotation file {json_path!r} does not exist.")
    try:
        with open(json_path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise PanopticDataError(f"{json_path!r} is not valid JSON: {error}.") from None
    if not isinstance(data, dict):
        raise PanopticDataError(f"{json_path!r}: expected a JSON object, got {type(data).__name__}.")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise PanopticDataError(
                f"{json_path!r} has no '{key}' field; a COCO panoptic JSON needs images, annotations and categories."
            )
    return data


def load_coco_panoptic(
    json_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    panoptic_dir: str | os.PathLike | None = None,
    synonyms_from: str | os.PathLike | Vocabulary | None = None,
    check_files: bool = True,
) -> tuple[Dataset, Vocabulary]:
    """Loads a COCO panoptic dataset lazily (no image or PNG is opened).

    Args:
        json_path: the panoptic JSON (`{"images", "annotations", "categories"}`).
        image_dir: folder of the images (`images[*].file_name`).
        panoptic_dir: folder of the panoptic PNGs (`annotations[*].file_name`); default: `json_path` without
            `.json` (the COCO convention, e.g. `panoptic_val2017.json` + `panoptic_val2017/`).
        synonyms_from: optional shipped vocabulary or file whose names replace the JSON names (matched by id).
        check_files: check that every image and PNG exists (a `stat` per file, no decoding).

    Returns:
        `(dataset, vocabulary)`: one row per annotated image with columns `image_id`, `image_path`, `panoptic_path`,
        `width`, `height`, `segments_info` (`[{"id", "category_id", "label_id", "iscrowd"}]`), in JSON order.
    """
    json_path = os.fspath(json_path)
    image_dir = os.fspath(image_dir)
    panoptic_dir = os.fspath(panoptic_dir) if panoptic_dir is not None else os.path.splitext(json_path)[0]
    for name, folder in (("image_dir", image_dir), ("panoptic_dir", panoptic_dir)):
        if not os.path.isdir(folder):
            raise PanopticDataError(f"{name} {folder!r} is not a directory.")
    data = _read_json(json_path)
    vocabulary = vocabulary_from_categories(data["categories"], synonyms_from, source=json_path)
    label_of = {dataset_id: label for label, dataset_id in enumerate(vocabulary.dataset_ids)}

    images = {}
    for index, image in enumerate(data["images"]):
        for key in ("id", "file_name"):
            if key not in image:
                raise PanopticDataError(f"{json_path!r}: images[{index}] has no '{key}' field.")
        images[image["id"]] = image

    rows = {key: [] for key in PANOPTIC_FEATURES}
    annotated = set()
    for index, annotation in enumerate(data["annotations"]):
        where = f"{json_path!r}, annotations[{index}]"
        for key in ("image_id", "file_name", "segments_info"):
            if key not in annotation:
                raise PanopticDataError(f"{where} has no '{key}' field.")
        image_id = annotation["image_id"]
        if image_id not in images:
            raise PanopticDataError(f"{where}: image_id {image_id!r} is not listed in 'images'.")
        if image_id in annotated:
            raise PanopticDataError(f"{where}: image_id {image_id!r} has more than one annotation.")
        annotated.add(image_id)
        image = images[image_id]
        segments, seen = [], set()
        for position, segment in enumerate(annotation["segments_info"]):
            for key in ("id", "category_id"):
                if key not in segment:
                    raise PanopticDataError(f"{where}, segments_info[{position}] has no '{key}' field.")
            segment_id, category_id = int(segment["id"]), int(segment["category_id"])
            if segment_id in seen:
                raise PanopticDataError(f"{where}: segment id {segment_id} appears twice in segments_info.")
            if segment_id <= 0:
                raise PanopticDataError(f"{where}: segment id {segment_id} must be > 0 (0 is void).")
            seen.add(segment_id)
            if category_id not in label_of:
                raise PanopticDataError(
                    f"{where}: segment {segment_id} has category_id {category_id}, which is not in 'categories' "
                    f"(ids {sorted(label_of)})."
                )
            segments.append(
                {
                    "id": segment_id,
                    "category_id": category_id,
                    "label_id": label_of[category_id],
                    "iscrowd": int(segment.get("iscrowd", 0)),
                }
            )
        image_path = os.path.join(image_dir, image["file_name"])
        panoptic_path = os.path.join(panoptic_dir, annotation["file_name"])
        if check_files:
            for kind, path in (("image", image_path), ("panoptic PNG", panoptic_path)):
                if not os.path.isfile(path):
                    raise PanopticDataError(f"{where}: the {kind} {path!r} of image {image_id!r} does not exist.")
        rows["image_id"].append(str(image_id))
        rows["image_path"].append(image_path)
        rows["panoptic_path"].append(panoptic_path)
        rows["width"].append(int(image.get("width", -1)))
        rows["height"].append(int(image.get("height", -1)))
        rows["segments_info"].append(segments)
    if not rows["image_id"]:
        raise PanopticDataError(f"{json_path!r} has no annotations: the dataset is empty.")
    missing = [image_id for image_id in images if image_id not in annotated]
    if missing:
        raise PanopticDataError(
            f"{json_path!r}: {len(missing)} image(s) have no panoptic annotation, e.g. {missing[:5]}."
        )
    return Dataset.from_dict(rows, features=PANOPTIC_FEATURES), vocabulary


def _open_checked(path: str, kind: str, image_id: str) -> Image.Image:
    if not os.path.isfile(path):
        raise PanopticDataError(f"The {kind} {path!r} of image {image_id!r} does not exist.")
    try:
        return Image.open(path)
    except OSError as error:
        raise PanopticDataError(f"Cannot read the {kind} {path!r} of image {image_id!r}: {error}.") from None


def _loaded(image: Image.Image, kind: str, where: str, image_id: str) -> Image.Image:
    """Decodes the pixels now, so that a truncated or corrupt file is reported with its name, not mid-training."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise PanopticDataError(f"Cannot decode the {kind} {where} of image {image_id!r}: {error}.") from None
    return image


def _example_images(example: Mapping) -> tuple[Image.Image, Image.Image, str, str]:
    """(image, panoptic map, image name, panoptic map name) of a COCO-folder row (`image_path`, `panoptic_path`) or
    of a Hub-style row (`image`, `annotation` already decoded by `datasets`' `Image()` feature)."""
    image_id = str(example["image_id"])
    if "image_path" in example:
        image_name, panoptic_name = repr(example["image_path"]), repr(example["panoptic_path"])
        image = _open_checked(example["image_path"], "image", image_id)
        panoptic = _open_checked(example["panoptic_path"], "panoptic PNG", image_id)
    else:
        source = example.get("source", "the dataset")
        image_name, panoptic_name = f"'image' of {source}", f"'annotation' of {source}"
        image, panoptic = example["image"], example["annotation"]
        for kind, name, value in (("image", image_name, image), ("panoptic PNG", panoptic_name, panoptic)):
            if not isinstance(value, Image.Image):
                raise PanopticDataError(
                    f"The {kind} {name} of image {image_id!r} is {type(value).__name__}, expected a PIL image (a "
                    "datasets Image() column)."
                )
    return (
        _loaded(image, "image", image_name, image_id),
        _loaded(panoptic, "panoptic PNG", panoptic_name, image_id),
        image_name,
        panoptic_name,
    )


def decode_panoptic_example(example: Mapping) -> PanopticExample:
    """Decodes one row of `load_coco_panoptic` or `load_hub_panoptic` into pixels, checking that image, panoptic
    map and segments agree; any problem is a `PanopticDataError` naming the file (or the dataset and image id)."""
    image_id = str(example["image_id"])
    image, panoptic, image_name, panoptic_name = _example_images(example)
    if panoptic.size != image.size:
        raise PanopticDataError(
            f"The panoptic PNG {panoptic_name} is {panoptic.size[0]}x{panoptic.size[1]} (WxH) but its "
            f"image {image_name} is {image.size[0]}x{image.size[1]}."
        )
    width, height = int(example.get("width", -1)), int(example.get("height", -1))
    if width > 0 and height > 0 and (width, height) != image.size:
        raise PanopticDataError(
            f"The image {image_name} is {image.size[0]}x{image.size[1]} (WxH) but the JSON says "
            f"width={width}, height={height}."
        )
    if panoptic.mode != "RGB":
        raise PanopticDataError(
            f"The panoptic PNG {panoptic_name} has mode {panoptic.mode!r}; COCO panoptic PNGs are RGB "
            "with id = R + 256 * G + 256**2 * B."
        )
    segment_ids = rgb_to_segment_ids(np.asarray(panoptic))

    present, counts = np.unique(segment_ids, return_counts=True)
    area_of = dict(zip(present.tolist(), counts.tolist()))
    listed = [int(segment["id"]) for segment in example["segments_info"]]
    absent = [segment_id for segment_id in listed if segment_id not in area_of]
    if absent:
        raise PanopticDataError(
            f"segments_info of image {image_id!r} lists segment ids {absent} that do not occur in the panoptic PNG "
            f"{panoptic_name}."
        )
    unlisted = sorted(set(area_of) - set(listed) - {0})
    if unlisted:
        raise PanopticDataError(
            f"The panoptic PNG {panoptic_name} contains segment ids {unlisted[:10]} that are not in "
            f"segments_info of image {image_id!r} (only 0 may be unlisted: it is void)."
        )
    segments_info = [
        {
            "id": int(segment["id"]),
            "category_id": int(segment["category_id"]),
            "label_id": int(segment["label_id"]),
            "iscrowd": int(segment.get("iscrowd", 0)),
            "area": int(area_of[int(segment["id"])]),
        }
        for segment in example["segments_info"]
    ]
    return PanopticExample(image.convert("RGB"), segment_ids, segments_info, image_id)
