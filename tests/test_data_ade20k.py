"""ADE20K -> COCO panoptic conversion on small files in the ADEChallengeData2016 layout."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from possam.configuration import load_vocabulary
from possam.training.ade20k import ADE20KConversionError, ade20k_instance_to_category, convert_ade20k_to_coco_panoptic
from possam.training.coco_panoptic import decode_panoptic_example, load_coco_panoptic


# Semantic values (1..150) used below: 1 wall (stuff), 3 sky (stuff), 8 bed (thing, instance class 1),
# 13 person (thing, instance class 4).
WALL, SKY, BED, PERSON = 1, 3, 8, 13


def _write_sample(root, split, stem, semantic, instance_class, instance_id):
    height, width = semantic.shape
    for folder in ("images", "annotations", "annotations_instance"):
        os.makedirs(root / folder / split, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
        root / "images" / split / f"{stem}.jpg"
    )
    Image.fromarray(semantic.astype(np.uint8)).save(root / "annotations" / split / f"{stem}.png")
    instance = np.stack([instance_class, instance_id, np.zeros_like(instance_id)], axis=-1).astype(np.uint8)
    Image.fromarray(instance).save(root / "annotations_instance" / split / f"{stem}.png")


def _scene():
    """12x16: sky on top, wall below, two beds and a person; part of a bed region has no instance (-> void)."""
    semantic = np.full((12, 16), WALL)
    semantic[:4] = SKY
    semantic[0, :3] = 0  # void in the semantic map
    instance_class = np.zeros((12, 16), dtype=np.int64)
    instance_id = np.zeros((12, 16), dtype=np.int64)
    semantic[6:10, 1:5] = BED
    instance_class[6:10, 1:5], instance_id[6:10, 1:5] = 1, 1
    semantic[6:10, 6:10] = BED
    instance_class[6:10, 6:9], instance_id[6:10, 6:9] = 1, 2  # column 9 of this bed: thing pixels without instance
    # The person instance overlaps one row of sky in the instance annotation (ADE's two annotations disagree a bit).
    semantic[4:11, 12:15] = PERSON
    instance_class[3:11, 12:15], instance_id[3:11, 12:15] = 4, 3
    return semantic, instance_class, instance_id


@pytest.fixture
def ade_root(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    semantic, instance_class, instance_id = _scene()
    _write_sample(root, "validation", "ADE_val_00000001", semantic, instance_class, instance_id)
    _write_sample(root, "validation", "ADE_val_00000002", np.full((8, 8), SKY), np.zeros((8, 8)), np.zeros((8, 8)))
    _write_sample(root, "training", "ADE_train_00000001", semantic, instance_class, instance_id)
    return root


def test_instance_classes_map_to_the_thing_classes_in_order():
    mapping = ade20k_instance_to_category()
    # Facts from ADE20K's ade20k_instance_catid_mapping.txt (instance -> 150-class value, minus 1 for dataset ids).
    assert len(mapping) == 100
    assert mapping[1] == 8 - 1 and mapping[2] == 9 - 1 and mapping[5] == 15 - 1
    assert mapping[57] == 89 - 1 and mapping[99] == 149 - 1 and mapping[100] == 150 - 1
    vocabulary = load_vocabulary("ade20k_150")
    assert all(vocabulary.is_thing[dataset_id] for dataset_id in mapping.values())


def test_conversion_of_a_scene(ade_root, tmp_path, capsys):
    result = convert_ade20k_to_coco_panoptic(ade_root, tmp_path / "out", split="validation")
    assert result.num_images == 2
    assert result.json_path == str(tmp_path / "out" / "ade20k_panoptic_val.json")
    with open(result.json_path) as handle:
        data = json.load(handle)
    assert [c["id"] for c in data["categories"]] == list(range(150))
    assert sum(c["isthing"] for c in data["categories"]) == 100
    assert data["categories"][2]["name"] == "sky" and data["categories"][7]["isthing"] == 1
    assert data["images"][0] == {
        "id": "ADE_val_00000001",
        "file_name": "ADE_val_00000001.jpg",
        "width": 16,
        "height": 12,
    }

    dataset, vocabulary = load_coco_panoptic(result.json_path, result.image_dir)
    assert vocabulary.dataset_ids == list(range(150)) and len(dataset) == 2
    example = decode_panoptic_example(dataset[0])
    ids, info = example.segment_ids, {s["id"]: s for s in example.segments_info}
    by_category = {}
    for segment in example.segments_info:
        by_category.setdefault(segment["category_id"], []).append(segment)
    assert sorted(by_category) == [WALL - 1, SKY - 1, BED - 1, PERSON - 1]
    assert len(by_category[BED - 1]) == 2 and len(by_category[PERSON - 1]) == 1
    assert all(s["iscrowd"] == 0 for s in example.segments_info)
    # Label ids = dataset ids here, since the categories are 0..149 in order.
    assert all(s["label_id"] == s["category_id"] for s in example.segments_info)

    semantic, _, _ = _scene()
    assert (ids[0, :3] == 0).all()  # semantic void stays void
    assert (ids[6:10, 9] == 0).all()  # thing pixels without an instance become void
    person = by_category[PERSON - 1][0]["id"]
    assert (ids[3:11, 12:15] == person).all()  # the instance wins over the stuff it overlaps
    sky = by_category[SKY - 1][0]["id"]
    assert info[sky]["area"] == int((semantic == SKY).sum()) - 3  # minus the row taken by the person
    first_bed, second_bed = sorted(s["id"] for s in by_category[BED - 1])
    assert {int(v) for v in np.unique(ids[6:10, 1:5])} | {int(v) for v in np.unique(ids[6:10, 6:9])} == {
        first_bed,
        second_bed,
    }
    # bboxes in the JSON equal the masks' extents
    segment = next(s for s in data["annotations"][0]["segments_info"] if s["id"] == person)
    assert segment["bbox"] == [12, 3, 3, 8] and segment["area"] == 24


def test_training_split_and_workers_give_the_same_result(ade_root, tmp_path):
    serial = convert_ade20k_to_coco_panoptic(ade_root, tmp_path / "serial", split="train")
    parallel = convert_ade20k_to_coco_panoptic(ade_root, tmp_path / "parallel", split="training", num_workers=2)
    with open(serial.json_path) as a, open(parallel.json_path) as b:
        assert json.load(a) == json.load(b)
    name = "ADE_train_00000001.png"
    assert np.array_equal(
        np.asarray(Image.open(os.path.join(serial.panoptic_dir, name))),
        np.asarray(Image.open(os.path.join(parallel.panoptic_dir, name))),
    )


def test_instance_with_two_classes_is_rejected(ade_root, tmp_path):
    semantic, instance_class, instance_id = _scene()
    instance_class[6, 1] = 4
    _write_sample(ade_root, "validation", "ADE_val_00000001", semantic, instance_class, instance_id)
    with pytest.raises(
        ADE20KConversionError, match=r"Instance 1 of .*ADE_val_00000001\.png' has instance class\(es\) \[1, 4\]"
    ):
        convert_ade20k_to_coco_panoptic(ade_root, tmp_path / "out")


def test_missing_instance_annotations_and_size_mismatch(ade_root, tmp_path):
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(
        ade_root / "annotations" / "validation" / "ADE_val_00000002.png"
    )
    with pytest.raises(
        ADE20KConversionError,
        match=r"semantic annotation .*ADE_val_00000002\.png' is 5x5 \(WxH\) but the image .* is 8x8",
    ):
        convert_ade20k_to_coco_panoptic(ade_root, tmp_path / "out")
    os.remove(ade_root / "annotations_instance" / "validation" / "ADE_val_00000001.png")
    with pytest.raises(ADE20KConversionError, match=r"Missing instance annotation .*ADE_val_00000001\.png"):
        convert_ade20k_to_coco_panoptic(ade_root, tmp_path / "out")
    with pytest.raises(ADE20KConversionError, match="annotations_instance"):
        convert_ade20k_to_coco_panoptic(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="split must be one of"):
        convert_ade20k_to_coco_panoptic(ade_root, tmp_path / "out", split="test")


def test_semantic_value_above_150_is_rejected(ade_root, tmp_path):
    semantic, instance_class, instance_id = _scene()
    semantic[0, 0] = 151
    _write_sample(ade_root, "validation", "ADE_val_00000001", semantic, instance_class, instance_id)
    with pytest.raises(ADE20KConversionError, match="has value 151; expected 0 \\(void\\) to 150"):
        convert_ade20k_to_coco_panoptic(ade_root, tmp_path / "out")


def test_prepare_ade20k_command(ade_root, tmp_path, capsys):
    from possam.cli import main as possam_main

    assert possam_main(["prepare-ade20k", str(ade_root), "--split", "val", "--out", str(tmp_path / "out")]) == 0
    assert "Wrote 2 images' panoptic annotations" in capsys.readouterr().out
    dataset, vocabulary = load_coco_panoptic(
        str(tmp_path / "out" / "ade20k_panoptic_val.json"), str(ade_root / "images" / "validation"), synonyms_from="ade20k_150"
    )
    assert len(dataset) == 2 and len(vocabulary) == 150 and vocabulary.class_names[0][0] == "wall"
    assert possam_main(["prepare-ade20k", str(tmp_path / "nowhere")]) == 1
    assert "possam prepare-ade20k: error:" in capsys.readouterr().err
