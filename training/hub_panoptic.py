"""Panoptic datasets in the Hugging Face Hub layout: a `datasets.Dataset` with `image` and `annotation` (`Image()`)
columns and `segments_info` (`[{"id", "category_id", "iscrowd", ...}]`).

`load_hub_panoptic` loads such a dataset (a Hub name, a local script/parquet/imagefolder dataset, or a folder written
by `save_to_disk`) and returns it with a `datasets` transform that gives each row the form `decode_panoptic_example`
reads (the same as a `load_coco_panoptic` row, but with decoded images instead of paths), so training, evaluation,
validation and augmentation are the same for both sources.

The vocabulary comes from a vocabulary file or shipped vocabulary whose dataset ids are the `category_id`s
(`--synonyms`), or else from the `category_id` `ClassLabel` names, with thing/stuff flags from an `isthing` field.
"""

from __future__ import annotations

import os

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset, load_from_disk

from ..configuration import Vocabulary, load_vocabulary
from .coco_panoptic import PanopticDataError


HUB_PANOPTIC_COLUMNS = ("image", "annotation", "segments_info")


def _is_saved_to_disk(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in ("dataset_dict.json", "state.json")
    )


def _load_split(name_or_path: str, config: str | None, split: str) -> Dataset:
    where = f"dataset {name_or_path!r}" + (f" (config {config!r})" if config else "")
    if _is_saved_to_disk(name_or_path):
        loaded = load_from_disk(name_or_path)
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise PanopticDataError(f"{where} has no split {split!r}; its splits are {sorted(loaded)}.")
            return loaded[split]
        return loaded
    try:
        return load_dataset(name_or_path, config, split=split)
    except ValueError as error:  # an unknown split, or one without data
        raise PanopticDataError(f"{where}: cannot load split {split!r}: {error}") from None


def _segment_feature(dataset: Dataset, source: str) -> dict:
    feature = dataset.features["segments_info"]
    segment = feature[0] if isinstance(feature, list) else getattr(feature, "feature", None)
    if not isinstance(segment, dict) or "id" not in segment or "category_id" not in segment:
        raise PanopticDataError(
            f"{source}: 'segments_info' must be a list of {{'id', 'category_id', 'iscrowd'}} structs, got {feature}."
        )
    return segment


def hub_vocabulary(dataset: Dataset, source: str, synonyms_from: str | os.PathLike | Vocabulary | None = None) -> Vocabulary:
    """The classes of a Hub-style panoptic dataset: `synonyms_from` (category ids = its dataset ids) if given, else the
    `category_id` `ClassLabel` names with each class's `isthing` flag as found in the segments."""
    if synonyms_from is not None:
        return synonyms_from if isinstance(synonyms_from, Vocabulary) else load_vocabulary(synonyms_from)
    segment = _segment_feature(dataset, source)
    category = segment["category_id"]
    if not isinstance(category, ClassLabel) or "isthing" not in segment:
        raise PanopticDataError(
            f"{source}: cannot tell the class names and thing/stuff flags (segments_info.category_id is "
            f"{type(category).__name__}, {'with' if 'isthing' in segment else 'without'} an 'isthing' field). Name them "
            "with --synonyms VOCABULARY (a file of 'category_id:name[,synonyms]:thing|stuff' lines or a shipped name)."
        )
    is_thing: dict[int, bool] = {}
    for segments in dataset.select_columns(["segments_info"])["segments_info"]:
        for entry in segments:
            is_thing.setdefault(int(entry["category_id"]), bool(entry["isthing"]))
    names = category.names
    return Vocabulary([[name] for name in names], [is_thing.get(index, True) for index in range(len(names))], list(range(len(names))))


class HubRowsToPanopticRows:
    """The `datasets` transform (`with_transform`) giving Hub-style rows the form `decode_panoptic_example` reads:
    `image_id`, `image`, `annotation`, `source`, and `segments_info` with contiguous `label_id`s."""

    def __init__(self, vocabulary: Vocabulary, source: str):
        self.label_of = {dataset_id: label for label, dataset_id in enumerate(vocabulary.dataset_ids)}
        self.source = source

    def __call__(self, batch: dict) -> dict:
        rows = {"image_id": [str(image_id) for image_id in batch["image_id"]]}
        rows["image"], rows["annotation"] = batch["image"], batch["annotation"]
        rows["segments_info"] = [
            [self._segment(segment, image_id) for segment in segments]
            for segments, image_id in zip(batch["segments_info"], rows["image_id"])
        ]
        rows["source"] = [self.source] * len(rows["image_id"])
        return rows

    def _segment(self, segment: dict, image_id: str) -> dict:
        category_id = int(segment["category_id"])
        if category_id not in self.label_of:
            raise PanopticDataError(
                f"{self.source}: segment {segment['id']} of image {image_id!r} has category_id {category_id}, which "
                f"is not in the vocabulary (ids {sorted(self.label_of)})."
            )
        return {
            "id": int(segment["id"]),
            "category_id": category_id,
            "label_id": self.label_of[category_id],
            "iscrowd": int(segment.get("iscrowd") or 0),
        }


def load_hub_panoptic(
    name_or_path: str | os.PathLike,
    config: str | None = None,
    split: str = "train",
    synonyms_from: str | os.PathLike | Vocabulary | None = None,
) -> tuple[Dataset, Vocabulary]:
    """Loads one split of a Hub-style panoptic dataset.

    Args:
        name_or_path: a Hub dataset name, a local dataset `datasets.load_dataset` reads (parquet, imagefolder, a
            script), or a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.
        config: the dataset configuration, if it has several.
        split: the split to load ("train", "validation", ...).
        synonyms_from: the vocabulary: a vocabulary file or shipped vocabulary whose dataset ids are the
            `category_id`s. Optional when `category_id` is a `ClassLabel` and segments carry `isthing`.

    Returns:
        `(dataset, vocabulary)`: the split with the transform applied (its rows read like `load_coco_panoptic`'s, with
        decoded images), and its classes.
    """
    name_or_path = os.fspath(name_or_path)
    dataset = _load_split(name_or_path, config, split)
    source = f"dataset {name_or_path!r} split {split!r}"
    missing = [column for column in HUB_PANOPTIC_COLUMNS if column not in dataset.column_names]
    if missing:
        raise PanopticDataError(
            f"{source} has no {missing} column(s); a panoptic dataset needs {list(HUB_PANOPTIC_COLUMNS)} (image and "
            f"annotation as Image() columns). Its columns: {dataset.column_names}."
        )
    if len(dataset) == 0:
        raise PanopticDataError(f"{source} is empty.")
    vocabulary = hub_vocabulary(dataset, source, synonyms_from)
    if "image_id" not in dataset.column_names:
        dataset = dataset.add_column("image_id", [str(index) for index in range(len(dataset))])
    return dataset.with_transform(HubRowsToPanopticRows(vocabulary, source)), vocabulary
