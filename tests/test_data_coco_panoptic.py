"""The lazy COCO panoptic loader: round trip with the generator, laziness, vocabulary, clear errors."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from possam.configuration import Vocabulary
from possam.training import coco_panoptic
from possam.training.coco_panoptic import (
    PanopticDataError,
    decode_panoptic_example,
    load_coco_panoptic,
    vocabulary_from_categories,
)
from possam.processing.panoptic_png import rgb_to_segment_ids, segment_ids_to_rgb
from possam.training.synthetic import generate_synthetic_coco_panoptic


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate_synthetic_coco_panoptic(tmp_path_factory.mktemp("coco"), num_images=6, image_size=48, seed=2)


@pytest.fixture
def copy(synthetic, tmp_path):
    """A private copy of the synthetic dataset that a test may corrupt."""
    root = tmp_path / "copy"
    shutil.copytree(synthetic.root, root)
    with open(root / "panoptic.json") as handle:
        data = json.load(handle)
    return root, data


def _write(root, data):
    with open(root / "panoptic.json", "w") as handle:
        json.dump(data, handle)


def _load(root, **kwargs):
    return load_coco_panoptic(root / "panoptic.json", root / "images", root / "panoptic", **kwargs)


def test_round_trip_generator_to_loader(synthetic):
    dataset, vocabulary = load_coco_panoptic(synthetic.json_path, synthetic.image_dir, synthetic.panoptic_dir)
    assert len(dataset) == 6
    assert vocabulary.labels == synthetic.vocabulary.labels and vocabulary.class_names[0] == ["ball"]
    assert vocabulary.is_thing == synthetic.vocabulary.is_thing
    assert vocabulary.dataset_ids == synthetic.vocabulary.dataset_ids
    # With the synonyms of the generator's vocabulary file, the full vocabulary round-trips.
    _, merged = load_coco_panoptic(
        synthetic.json_path, synthetic.image_dir, synthetic.panoptic_dir, synonyms_from=synthetic.vocabulary_path
    )
    assert merged == synthetic.vocabulary
    with open(synthetic.json_path) as handle:
        data = json.load(handle)
    for row, annotation in zip(dataset, data["annotations"]):
        example = decode_panoptic_example(row)
        assert example.image.mode == "RGB" and example.image.size == (48, 48)
        assert example.segment_ids.dtype == np.int64 and example.segment_ids.shape == (48, 48)
        expected_ids = rgb_to_segment_ids(
            np.asarray(Image.open(os.path.join(synthetic.panoptic_dir, annotation["file_name"])))
        )
        assert np.array_equal(example.segment_ids, expected_ids)
        assert example.image_id == str(annotation["image_id"])
        for decoded, original in zip(example.segments_info, annotation["segments_info"]):
            assert decoded["id"] == original["id"] and decoded["area"] == original["area"]
            assert decoded["iscrowd"] == original["iscrowd"]
            assert decoded["category_id"] == original["category_id"]
            assert decoded["label_id"] == vocabulary.dataset_ids.index(original["category_id"])


def test_loading_opens_no_image_and_decoding_opens_two(synthetic, monkeypatch):
    opened = []
    real_open = coco_panoptic.Image.open
    monkeypatch.setattr(
        coco_panoptic.Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k)
    )
    dataset, _ = load_coco_panoptic(synthetic.json_path, synthetic.image_dir, synthetic.panoptic_dir)
    assert opened == []
    assert set(dataset.column_names) == {"image_id", "image_path", "panoptic_path", "width", "height", "segments_info"}
    decode_panoptic_example(dataset[3])
    assert opened == [dataset[3]["image_path"], dataset[3]["panoptic_path"]]


def test_default_panoptic_dir_is_json_path_without_extension(synthetic, tmp_path):
    root = tmp_path / "layout"
    shutil.copytree(synthetic.image_dir, root / "images")
    shutil.copytree(synthetic.panoptic_dir, root / "panoptic_val")
    shutil.copy(synthetic.json_path, root / "panoptic_val.json")
    dataset, _ = load_coco_panoptic(root / "panoptic_val.json", root / "images")
    assert dataset[0]["panoptic_path"].startswith(str(root / "panoptic_val"))


def test_synonyms_merged_from_shipped_vocabulary_by_dataset_id():
    categories = [
        {"id": 1, "name": "person", "isthing": 1},
        {"id": 199, "name": "wall-other-merged", "isthing": 0},
        {"id": 5000, "name": "spaceship", "isthing": 1},
    ]
    vocabulary = vocabulary_from_categories(categories, synonyms_from="coco_panoptic")
    assert vocabulary.dataset_ids == [1, 199, 5000]
    assert vocabulary.class_names[0][0] == "person" and len(vocabulary.class_names[0]) > 1
    assert vocabulary.class_names[1][0] != "wall-other-merged" and "wall" in vocabulary.class_names[1][0]
    assert vocabulary.class_names[2] == ["spaceship"]  # not in the shipped file: JSON name kept
    assert vocabulary.is_thing == [True, False, True]
    custom = Vocabulary([["sfera", "palla"]], [True], [1])
    assert vocabulary_from_categories(categories[:1], synonyms_from=custom).class_names == [["sfera", "palla"]]


def test_missing_file_is_named(copy):
    root, _ = copy
    os.remove(root / "images" / "synthetic_000002.png")
    with pytest.raises(PanopticDataError, match=r"image .*synthetic_000002\.png.* of image 2 does not exist"):
        _load(root)
    dataset, _ = _load(root, check_files=False)
    with pytest.raises(PanopticDataError, match=r"The image .*synthetic_000002\.png.* does not exist"):
        decode_panoptic_example(dataset[2])


def test_missing_json_and_folder(tmp_path, synthetic):
    with pytest.raises(PanopticDataError, match="does not exist"):
        load_coco_panoptic(tmp_path / "nope.json", synthetic.image_dir, synthetic.panoptic_dir)
    with pytest.raises(PanopticDataError, match="panoptic_dir .* is not a directory"):
        load_coco_panoptic(synthetic.json_path, synthetic.image_dir, tmp_path / "nowhere")


def test_png_size_differs_from_image(copy):
    root, _ = copy
    path = root / "panoptic" / "synthetic_000001.png"
    Image.fromarray(np.asarray(Image.open(path))[:40]).save(path)
    dataset, _ = _load(root)
    with pytest.raises(PanopticDataError, match=r"synthetic_000001\.png.* is 48x40 .* image .* is 48x48"):
        decode_panoptic_example(dataset[1])


def test_segment_listed_but_absent_from_png(copy):
    root, data = copy
    data["annotations"][0]["segments_info"].append({"id": 77, "category_id": 1, "iscrowd": 0})
    _write(root, data)
    dataset, _ = _load(root)
    with pytest.raises(PanopticDataError, match=r"lists segment ids \[77\] that do not occur in the panoptic PNG"):
        decode_panoptic_example(dataset[0])


def test_png_id_not_listed(copy):
    root, data = copy
    removed = data["annotations"][0]["segments_info"].pop()
    _write(root, data)
    dataset, _ = _load(root)
    with pytest.raises(
        PanopticDataError, match=rf"contains segment ids \[{removed['id']}\] that are not in segments_info"
    ):
        decode_panoptic_example(dataset[0])


def test_unknown_category(copy):
    root, data = copy
    data["annotations"][4]["segments_info"][0]["category_id"] = 42
    _write(root, data)
    with pytest.raises(
        PanopticDataError, match=r"annotations\[4\]: segment \d+ has category_id 42, which is not in 'categories'"
    ):
        _load(root)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda d: d.pop("categories"), "has no 'categories' field"),
        (lambda d: d["annotations"][1].pop("segments_info"), r"annotations\[1\] has no 'segments_info' field"),
        (
            lambda d: d["annotations"][1]["segments_info"][0].pop("id"),
            r"annotations\[1\], segments_info\[0\] has no 'id'",
        ),
        (lambda d: d["categories"][0].pop("isthing"), r"categories\[0\] has no 'isthing' field"),
        (lambda d: d["annotations"].pop(), r"1 image\(s\) have no panoptic annotation, e.g. \[5\]"),
        (lambda d: d["annotations"][0].update(image_id=999), "image_id 999 is not listed in 'images'"),
        (
            lambda d: d["annotations"][0]["segments_info"].append(dict(d["annotations"][0]["segments_info"][0])),
            "appears twice",
        ),
    ],
)
def test_malformed_json(copy, corrupt, match):
    root, data = copy
    corrupt(data)
    _write(root, data)
    with pytest.raises(PanopticDataError, match=match):
        _load(root)


def test_non_rgb_png(copy):
    root, _ = copy
    path = root / "panoptic" / "synthetic_000000.png"
    Image.fromarray(np.asarray(Image.open(path))[..., 0]).save(path)
    dataset, _ = _load(root)
    with pytest.raises(PanopticDataError, match="has mode 'L'; COCO panoptic PNGs are RGB"):
        decode_panoptic_example(dataset[0])


def test_png_encoding_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 256**3 - 1, 123456]])
    assert np.array_equal(rgb_to_segment_ids(segment_ids_to_rgb(ids)), ids)
    assert segment_ids_to_rgb(np.array([[1 + 2 * 256 + 3 * 65536]]))[0, 0].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="must lie in"):
        segment_ids_to_rgb(np.array([[256**3]]))
