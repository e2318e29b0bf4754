"""Whole-dataset validation before the first step: every problem reported with its file, `--skip_invalid`, caching,
empty datasets; on a synthetic dataset corrupted on purpose."""

from __future__ import annotations

import json
import os

import pytest
from conftest import IMAGE_SIZE
from PIL import Image

from possam.cli import main as possam_main
from test_logging import captured_logs
from possam.training import PanopticDataError, generate_synthetic_coco_panoptic, load_coco_panoptic
from possam.training import validation as validation_module
from possam.training.validation import checked_dataset, validate_panoptic_dataset


def corrupt(split) -> dict[int, str]:
    """Breaks samples 1, 3 and 4 of a generated split three ways; returns {index: the file named in its error}."""
    with open(split.json_path) as handle:
        data = json.load(handle)
    images = {image["id"]: image for image in data["images"]}
    annotations = data["annotations"]
    # 1: a truncated image file.
    truncated = os.path.join(split.image_dir, images[annotations[1]["image_id"]]["file_name"])
    with open(truncated, "rb") as handle:
        content = handle.read()
    with open(truncated, "wb") as handle:
        handle.write(content[: len(content) // 2])
    # 3: a panoptic PNG of the wrong size.
    resized = os.path.join(split.panoptic_dir, annotations[3]["file_name"])
    Image.open(resized).resize((IMAGE_SIZE // 2, IMAGE_SIZE)).save(resized)
    # 4: segments_info lists a segment the PNG does not hold.
    annotations[4]["segments_info"].append({"id": 12345, "category_id": data["categories"][0]["id"], "iscrowd": 0})
    with open(split.json_path, "w") as handle:
        json.dump(data, handle)
    return {1: truncated, 3: resized, 4: os.path.join(split.panoptic_dir, annotations[4]["file_name"])}


@pytest.fixture
def corrupted(tmp_path):
    split = generate_synthetic_coco_panoptic(tmp_path / "data", num_images=6, image_size=IMAGE_SIZE, seed=3)
    return split, corrupt(split)


def test_every_invalid_sample_is_reported_with_its_file(corrupted, tmp_path):
    split, broken = corrupted
    dataset, _ = load_coco_panoptic(split.json_path, split.image_dir)
    for workers in (1, 4):
        report = validate_panoptic_dataset(dataset, "synthetic", num_workers=workers, cache_dir="")
        assert sorted(report.problems) == sorted(broken) and report.num_samples == 6
        for index, path in broken.items():
            assert path in report.problems[index]
    assert "truncated" in report.problems[1]
    assert "is 64x128 (WxH) but its image" in report.problems[3]
    assert "lists segment ids [12345]" in report.problems[4]
    with pytest.raises(PanopticDataError) as error:
        checked_dataset(dataset, "synthetic", cache_dir="")
    message = str(error.value)
    assert message.startswith("3 of 6 samples of synthetic are invalid") and "--skip_invalid" in message
    assert all(path in message for path in broken.values())


def test_skip_invalid_drops_the_bad_samples_and_counts_them(corrupted):
    split, broken = corrupted
    dataset, _ = load_coco_panoptic(split.json_path, split.image_dir)
    with captured_logs() as messages:
        kept = checked_dataset(dataset, "synthetic", skip_invalid=True, cache_dir="")
    assert messages[-1] == "Skipped 3 invalid of 6 samples of synthetic (--skip_invalid)."
    assert [message.split(":")[0] for message in messages[:-1]] == [f"Skipping sample {index} of synthetic" for index in broken]
    assert kept["image_id"] == [dataset[index]["image_id"] for index in range(6) if index not in broken]
    assert validate_panoptic_dataset(kept, "kept", cache_dir="").problems == {}


def test_validation_is_cached_per_dataset_and_redone_when_a_file_changes(corrupted, tmp_path, monkeypatch):
    split, broken = corrupted
    dataset, _ = load_coco_panoptic(split.json_path, split.image_dir)
    cache = tmp_path / "cache"
    first = validate_panoptic_dataset(dataset, "synthetic", cache_dir=str(cache))
    assert len(os.listdir(cache)) == 1

    def no_decoding(example):
        raise AssertionError("a cached dataset must not be decoded again")

    monkeypatch.setattr(validation_module, "decode_panoptic_example", no_decoding)
    assert validate_panoptic_dataset(dataset, "synthetic", cache_dir=str(cache)).problems == first.problems
    monkeypatch.undo()
    repaired = generate_synthetic_coco_panoptic(tmp_path / "fresh", num_images=6, image_size=IMAGE_SIZE, seed=3)
    os.replace(os.path.join(repaired.image_dir, os.path.basename(broken[1])), broken[1])  # the file changes
    assert sorted(validate_panoptic_dataset(dataset, "synthetic", cache_dir=str(cache)).problems) == [3, 4]


def train_flags(split, output_dir, *extra) -> list[str]:
    return ["train", "--preset", "tiny", "--output_dir", str(output_dir), "--max_steps", "1", "--per_device_train_batch_size",
            "2", "--report_to", "none", "--use_cpu", "--disable_tqdm", "true", "--save_strategy", "no",
            "--train_annotations", split.json_path, "--train_images", split.image_dir,
            "--validation_cache_dir", str(output_dir / "validation_cache"), *extra]


def test_possam_train_fails_before_the_first_step_or_skips_with_a_count(corrupted, tmp_path, capsys):
    split, broken = corrupted
    assert possam_main(train_flags(split, tmp_path / "strict")) == 1
    error = capsys.readouterr().err
    assert "possam train: error: 3 of 6 samples" in error and all(path in error for path in broken.values())
    assert not (tmp_path / "strict" / "model.safetensors").exists()

    with captured_logs() as messages:
        assert possam_main(train_flags(split, tmp_path / "skip", "--skip_invalid")) == 0
    captured = capsys.readouterr()
    assert any(message.startswith("Skipped 3 invalid of 6 samples") for message in messages)
    assert json.loads(captured.out[captured.out.rindex("{\n"):])["train_loss"] > 0


def test_empty_datasets_are_errors_naming_the_file(tmp_path, capsys):
    split = generate_synthetic_coco_panoptic(tmp_path / "data", num_images=2, image_size=IMAGE_SIZE, seed=0)
    with open(split.json_path) as handle:
        data = json.load(handle)
    data["images"], data["annotations"] = [], []
    empty_json = tmp_path / "empty.json"
    empty_json.write_text(json.dumps(data))
    with pytest.raises(PanopticDataError, match=f"{empty_json}.*has no annotations: the dataset is empty"):
        load_coco_panoptic(empty_json, split.image_dir, split.panoptic_dir)
    flags = ["--eval_annotations", str(empty_json), "--eval_images", split.image_dir, "--eval_panoptic", split.panoptic_dir]
    assert possam_main(["evaluate", "--preset", "tiny", *flags]) == 1
    assert "empty.json' has no annotations: the dataset is empty" in capsys.readouterr().err


def test_all_samples_invalid_is_an_error_even_when_skipping(corrupted):
    split, _ = corrupted
    dataset, _ = load_coco_panoptic(split.json_path, split.image_dir)
    broken_only = dataset.select([1, 3, 4])
    with pytest.raises(PanopticDataError, match="all 3 samples are invalid"):
        checked_dataset(broken_only, "synthetic", skip_invalid=True, cache_dir="")
