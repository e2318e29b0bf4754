"""Hub-style panoptic datasets (`image`, `annotation` Image() columns + `segments_info`), saved with `datasets`, train
and evaluate exactly like the same data in COCO-panoptic folders, from Python and through `possam train`."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from conftest import IMAGE_SIZE, tiny_processor
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

from possam.cli import main as possam_main
from possam.training import (
    PanopticDataError,
    PanopticEvaluationDataset,
    PanopticTrainingDataset,
    generate_synthetic_coco_panoptic,
    load_coco_panoptic,
    load_hub_panoptic,
)


SEGMENT = {"id": Value("int64"), "category_id": Value("int64"), "iscrowd": Value("int64"), "area": Value("int64")}


def hub_rows(split) -> dict:
    """The synthetic COCO-panoptic split as Hub-style columns, with the image bytes inside the dataset."""
    with open(split.json_path) as handle:
        data = json.load(handle)
    images = {image["id"]: image for image in data["images"]}
    rows = {"image_id": [], "image": [], "annotation": [], "segments_info": []}
    for annotation in data["annotations"]:
        image_path = os.path.join(split.image_dir, images[annotation["image_id"]]["file_name"])
        panoptic_path = os.path.join(split.panoptic_dir, annotation["file_name"])
        rows["image_id"].append(str(annotation["image_id"]))
        rows["image"].append({"bytes": open(image_path, "rb").read(), "path": None})
        rows["annotation"].append({"bytes": open(panoptic_path, "rb").read(), "path": None})
        rows["segments_info"].append([{key: segment[key] for key in SEGMENT} for segment in annotation["segments_info"]])
    return rows


def hub_features(segment=SEGMENT) -> Features:
    return Features({"image_id": Value("string"), "image": Image(), "annotation": Image(), "segments_info": [segment]})


@pytest.fixture(scope="module")
def hub_dataset(tmp_path_factory):
    """A `DatasetDict` (train, validation) built from the synthetic generator and saved with `save_to_disk`; the
    generated folders are deleted, so only the saved dataset remains. Also returns the same data as COCO folders."""
    root = tmp_path_factory.mktemp("hub")
    generated = {
        "train": generate_synthetic_coco_panoptic(root / "coco_train", num_images=8, image_size=IMAGE_SIZE, seed=0),
        "validation": generate_synthetic_coco_panoptic(root / "coco_val", num_images=4, image_size=IMAGE_SIZE, seed=1000),
    }
    splits = DatasetDict({name: Dataset.from_dict(hub_rows(split), features=hub_features()) for name, split in generated.items()})
    splits.save_to_disk(root / "saved")
    for name, split in generated.items():  # the reference copy in COCO folders, elsewhere
        shutil.copytree(split.root, root / f"reference_{name}")
        shutil.rmtree(split.root)
    return root / "saved", {name: root / f"reference_{name}" for name in generated}


def coco_split(folder):
    return load_coco_panoptic(folder / "panoptic.json", folder / "images", synonyms_from=folder / "vocabulary.txt")


def test_hub_dataset_gives_the_same_training_and_evaluation_examples_as_coco_folders(hub_dataset):
    saved, reference = hub_dataset
    processor = tiny_processor()
    hub_train, hub_vocabulary = load_hub_panoptic(saved, split="train", synonyms_from=reference["train"] / "vocabulary.txt")
    coco_train, coco_vocabulary = coco_split(reference["train"])
    assert hub_vocabulary == coco_vocabulary and len(hub_train) == len(coco_train) == 8
    hub_examples = PanopticTrainingDataset(hub_train, processor.image_processor, seed=5)
    coco_examples = PanopticTrainingDataset(coco_train, processor.image_processor, seed=5)
    for epoch in (0, 1):  # the same augmentation, epoch after epoch
        hub_examples.set_epoch(epoch), coco_examples.set_epoch(epoch)
        for index in (0, 3, 7):
            expected, actual = coco_examples[index], hub_examples[index]
            assert expected.keys() == actual.keys()
            for key in expected:
                assert torch.equal(expected[key], actual[key]), (epoch, index, key)

    hub_val, _ = load_hub_panoptic(saved, split="validation", synonyms_from=reference["validation"] / "vocabulary.txt")
    coco_val, _ = coco_split(reference["validation"])
    expected_split = PanopticEvaluationDataset(coco_val, processor.image_processor)
    actual_split = PanopticEvaluationDataset(hub_val, processor.image_processor)
    expected, actual = expected_split[2], actual_split[2]
    assert expected.keys() == actual.keys()
    for key in ("pixel_values", "pixel_mask", "ignore_mask"):
        assert torch.equal(expected[key], actual[key]), key
    assert all(torch.equal(e, a) for e, a in zip(expected["mask_labels"], actual["mask_labels"]))
    assert torch.equal(expected["class_labels"], actual["class_labels"])
    expected_truth, actual_truth = expected_split.ground_truth(2), actual_split.ground_truth(2)
    assert (expected_truth["segment_ids"] == actual_truth["segment_ids"]).all()
    assert expected_truth["segments_info"] == actual_truth["segments_info"]


def test_local_parquet_dataset_loads_with_load_dataset(hub_dataset, tmp_path):
    saved, reference = hub_dataset
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    Dataset.load_from_disk(saved / "train").to_parquet(parquet_dir / "train.parquet")
    dataset, _ = load_hub_panoptic(parquet_dir, split="train", synonyms_from=reference["train"] / "vocabulary.txt")
    coco_train, _ = coco_split(reference["train"])
    processor = tiny_processor()
    expected = PanopticTrainingDataset(coco_train, processor.image_processor)[4]
    actual = PanopticTrainingDataset(dataset, processor.image_processor)[4]
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_class_label_names_and_isthing_give_the_vocabulary_without_a_file(hub_dataset):
    saved, reference = hub_dataset
    coco_vocabulary = coco_split(reference["train"])[1]
    names = [entry[0] for entry in coco_vocabulary.class_names]
    thing = dict(zip(coco_vocabulary.dataset_ids, coco_vocabulary.is_thing))
    rows = Dataset.load_from_disk(saved / "train").to_dict()
    for segments in rows["segments_info"]:
        for segment in segments:
            segment["isthing"] = int(thing[segment["category_id"]])
            segment["category_id"] = coco_vocabulary.dataset_ids.index(segment["category_id"])  # 0..C-1
    segment_feature = {**SEGMENT, "category_id": ClassLabel(names=names), "isthing": Value("int64")}
    Dataset.from_dict(rows, features=hub_features(segment_feature)).save_to_disk(saved.parent / "classlabel")
    dataset, vocabulary = load_hub_panoptic(saved.parent / "classlabel")
    assert [entry[0] for entry in vocabulary.class_names] == names
    assert vocabulary.is_thing == coco_vocabulary.is_thing
    assert dataset[0]["segments_info"][0]["label_id"] == rows["segments_info"][0][0]["category_id"]


def test_hub_dataset_errors_name_the_dataset_and_what_is_missing(hub_dataset, tmp_path):
    saved, _ = hub_dataset
    with pytest.raises(PanopticDataError, match="has no split 'test'.*'train', 'validation'"):
        load_hub_panoptic(saved, split="test")
    with pytest.raises(PanopticDataError, match="cannot tell the class names.*--synonyms"):
        load_hub_panoptic(saved, split="train")
    Dataset.from_dict({"image": ["a.png"], "label": ["a.png"]}).save_to_disk(tmp_path / "wrong")
    with pytest.raises(PanopticDataError, match=r"has no \['annotation', 'segments_info'\] column"):
        load_hub_panoptic(tmp_path / "wrong")
    (tmp_path / "empty").mkdir()
    empty = {"image_id": [], "image": [], "annotation": [], "segments_info": []}
    Dataset.from_dict(empty, features=hub_features()).to_parquet(tmp_path / "empty" / "train.parquet")
    with pytest.raises(PanopticDataError, match=f"{tmp_path / 'empty'}.*split 'train'.*no data"):
        load_hub_panoptic(tmp_path / "empty")


def run_flags(output_dir, *extra) -> list[str]:
    return ["train", "--preset", "tiny", "--output_dir", str(output_dir), "--per_device_train_batch_size", "2",
            "--learning_rate", "1e-3", "--logging_steps", "1", "--report_to", "none", "--use_cpu",
            "--disable_tqdm", "true", "--seed", "0", "--validation_cache_dir", "", *extra]


def logged_losses(output_dir, checkpoint: str) -> list[float]:
    state = json.loads((output_dir / checkpoint / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_possam_train_with_dataset_name_equals_training_on_coco_folders_and_resumes_exactly(hub_dataset, tmp_path, capsys):
    saved, reference = hub_dataset
    vocabulary = str(reference["train"] / "vocabulary.txt")
    hub = ["--dataset_name", str(saved), "--train_split", "train", "--eval_split", "validation", "--synonyms", vocabulary]
    assert possam_main(run_flags(tmp_path / "hub", *hub, "--max_steps", "3", "--save_steps", "1")) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(printed[printed.rindex("{\n"):])  # the final metrics, printed last as JSON
    assert "train_loss" in metrics and any(key.lower().endswith("pq") for key in metrics)

    evaluation = ["evaluate", "--model_name_or_path", str(tmp_path / "hub"), "--validation_cache_dir", "", *hub[:2], *hub[4:]]
    assert possam_main(evaluation) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert any(key.lower().endswith("pq") for key in evaluated) and len(evaluated) > 3

    coco = ["--train_annotations", str(reference["train"] / "panoptic.json"), "--train_images",
            str(reference["train"] / "images"), "--synonyms", vocabulary]
    assert possam_main(run_flags(tmp_path / "coco", *coco, "--max_steps", "3", "--save_steps", "3")) == 0
    assert logged_losses(tmp_path / "hub", "checkpoint-3") == logged_losses(tmp_path / "coco", "checkpoint-3")

    resume = ["--resume_from_checkpoint", str(tmp_path / "hub" / "checkpoint-1")]
    assert possam_main(run_flags(tmp_path / "hub", *hub[:4], *hub[6:], "--max_steps", "3", "--save_steps", "3", *resume)) == 0
    assert logged_losses(tmp_path / "hub", "checkpoint-3") == logged_losses(tmp_path / "coco", "checkpoint-3")
