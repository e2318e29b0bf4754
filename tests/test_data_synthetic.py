"""The synthetic COCO panoptic generator: determinism, exact file format, learnable scenes."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from possam.configuration import Vocabulary
from possam.processing.panoptic_png import rgb_to_segment_ids
from possam.training.synthetic import SYNTHETIC_CLASSES, generate_synthetic_coco_panoptic, synthetic_vocabulary


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_synthetic_coco_panoptic(tmp_path_factory.mktemp("synthetic"), num_images=12, image_size=64, seed=3)


def _files(root):
    return sorted(
        os.path.relpath(os.path.join(folder, name), root) for folder, _, names in os.walk(root) for name in names
    )


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    first = generate_synthetic_coco_panoptic(tmp_path / "a", num_images=4, image_size=48, seed=5)
    second = generate_synthetic_coco_panoptic(tmp_path / "b", num_images=4, image_size=48, seed=5)
    other = generate_synthetic_coco_panoptic(tmp_path / "c", num_images=4, image_size=48, seed=6)
    assert _files(first.root) == _files(second.root) == _files(other.root)
    assert len(_files(first.root)) == 2 * 4 + 2
    for relative in _files(first.root):
        with open(os.path.join(first.root, relative), "rb") as a, open(os.path.join(second.root, relative), "rb") as b:
            assert a.read() == b.read(), relative
    with open(first.json_path, "rb") as a, open(other.json_path, "rb") as c:
        assert a.read() != c.read()


def test_image_i_does_not_depend_on_the_number_of_images(tmp_path):
    small = generate_synthetic_coco_panoptic(tmp_path / "small", num_images=2, image_size=48, seed=1)
    large = generate_synthetic_coco_panoptic(tmp_path / "large", num_images=5, image_size=48, seed=1)
    for name in ("images/synthetic_000001.png", "panoptic/synthetic_000001.png"):
        assert np.array_equal(
            np.asarray(Image.open(os.path.join(small.root, name))),
            np.asarray(Image.open(os.path.join(large.root, name))),
        )


def test_json_is_exact_coco_panoptic_and_matches_pngs(dataset):
    with open(dataset.json_path) as handle:
        data = json.load(handle)
    assert set(data) == {"info", "images", "annotations", "categories"}
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5]
    assert [c["name"] for c in data["categories"]] == ["ball", "box", "kite", "sky", "grass"]
    assert [c["isthing"] for c in data["categories"]] == [1, 1, 1, 0, 0]
    assert all(len(c["color"]) == 3 for c in data["categories"])
    assert len(data["images"]) == len(data["annotations"]) == 12
    crowd_images = void_images = 0
    for image, annotation in zip(data["images"], data["annotations"]):
        assert set(image) == {"id", "file_name", "width", "height"} and (image["width"], image["height"]) == (64, 64)
        assert set(annotation) == {"image_id", "file_name", "segments_info"} and annotation["image_id"] == image["id"]
        rgb = np.asarray(Image.open(os.path.join(dataset.image_dir, image["file_name"])))
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
        panoptic = Image.open(os.path.join(dataset.panoptic_dir, annotation["file_name"]))
        assert panoptic.mode == "RGB"
        ids = rgb_to_segment_ids(np.asarray(panoptic))
        listed = [segment["id"] for segment in annotation["segments_info"]]
        assert set(np.unique(ids).tolist()) - {0} == set(listed)
        for segment in annotation["segments_info"]:
            assert set(segment) == {"id", "category_id", "area", "bbox", "iscrowd"}
            mask = ids == segment["id"]
            rows, cols = np.nonzero(mask)
            assert segment["area"] == int(mask.sum())
            assert segment["bbox"] == [
                cols.min(),
                rows.min(),
                cols.max() - cols.min() + 1,
                rows.max() - rows.min() + 1,
            ]
            assert segment["iscrowd"] in (0, 1)
            assert segment["iscrowd"] == 0 or data["categories"][segment["category_id"] - 1]["isthing"] == 1
        things = [s for s in annotation["segments_info"] if s["category_id"] <= 3 and not s["iscrowd"]]
        stuff = [s for s in annotation["segments_info"] if s["category_id"] > 3]
        assert 1 <= len(things) <= 4 and len(stuff) == 2
        crowd_images += any(s["iscrowd"] for s in annotation["segments_info"])
        void_images += bool((ids == 0).any())
    assert crowd_images >= 1 and void_images >= 1
    assert crowd_images < 12 and void_images < 12


def test_vocabulary_file_round_trips(dataset):
    loaded = Vocabulary.from_file(dataset.vocabulary_path)
    assert loaded == dataset.vocabulary == synthetic_vocabulary()
    assert loaded.labels == ["ball", "box", "kite", "sky", "grass"]
    assert loaded.is_thing == [True, True, True, False, False]
    assert loaded.dataset_ids == [1, 2, 3, 4, 5]
    assert loaded.class_names[0] == ["ball", "sphere"]


def test_classes_are_separable_by_colour(dataset):
    """Learnability proxy: a nearest-mean-colour pixel classifier already labels most pixels right."""
    with open(dataset.json_path) as handle:
        data = json.load(handle)
    pixels, labels = [], []
    for annotation in data["annotations"]:
        rgb = np.asarray(Image.open(os.path.join(dataset.image_dir, annotation["file_name"]))).reshape(-1, 3)
        ids = rgb_to_segment_ids(
            np.asarray(Image.open(os.path.join(dataset.panoptic_dir, annotation["file_name"])))
        ).ravel()
        for segment in annotation["segments_info"]:
            pixels.append(rgb[ids == segment["id"]].astype(np.float64))
            labels.append(np.full(segment["area"], segment["category_id"]))
    pixels, labels = np.concatenate(pixels), np.concatenate(labels)
    means = np.stack([pixels[labels == c].mean(axis=0) for c in range(1, 6)])
    predicted = 1 + np.argmin(((pixels[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (predicted == labels).mean() > 0.9


def test_custom_class_set_and_size(tmp_path):
    result = generate_synthetic_coco_panoptic(
        tmp_path,
        num_images=2,
        image_size=40,
        seed=0,
        class_names=["water", "gem", "sand", "ball"],
        crowd_probability=0.0,
        void_probability=0.0,
    )
    assert result.vocabulary.labels == ["gem", "ball", "water", "sand"]  # things first, like COCO
    with open(result.json_path) as handle:
        data = json.load(handle)
    assert all(not s["iscrowd"] for a in data["annotations"] for s in a["segments_info"])
    for annotation in data["annotations"]:
        ids = rgb_to_segment_ids(np.asarray(Image.open(os.path.join(result.panoptic_dir, annotation["file_name"]))))
        assert ids.shape == (40, 40) and (ids != 0).all()  # no void when void_probability = 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"class_names": ["ball", "unicorn"]}, r"Unknown synthetic classes \['unicorn'\]"),
        ({"class_names": ["ball", "box"]}, "at least one thing and one stuff"),
        ({"image_size": 16}, "image_size must be >= 32"),
        ({"num_images": 0}, "num_images must be >= 1"),
        ({"crowd_probability": 1.5}, r"crowd_probability must lie in \[0, 1\]"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_synthetic_coco_panoptic(tmp_path, **kwargs)


def test_registry_has_distinct_colours():
    colours = [cls.color for cls in SYNTHETIC_CLASSES.values()]
    assert len(set(colours)) == len(colours)
