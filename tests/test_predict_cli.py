"""`possam predict` end to end on a tiny checkpoint: written files, their agreement, exit codes and messages."""

from __future__ import annotations

import json
import os

import numpy as np
import PIL.Image
import pytest
from pipeline_testing import random_image, save_checkpoint, single_thread  # noqa: F401  (autouse fixture)
from possam import cli
from possam.processing.predict_cli import main, parse_class_list
from possam.processing.panoptic_png import rgb_to_segment_ids


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("model"), store_default_vocabulary=False)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    first, second = folder / "street.png", folder / "park.jpg"
    random_image(60, 90, seed=0).save(first)
    random_image(70, 50, seed=1).save(second)
    return [str(first), str(second)]


def check_outputs(out_dir, image_path, labels):
    stem = image_path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    with PIL.Image.open(image_path) as image:
        size = image.size
    with open(out_dir / f"{stem}.json", encoding="utf-8") as handle:
        record = json.load(handle)
    assert record["image"] == image_path and (record["width"], record["height"]) == size
    overlay = PIL.Image.open(out_dir / f"{stem}_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == size
    panoptic = PIL.Image.open(out_dir / f"{stem}_panoptic.png")
    assert panoptic.mode == "RGB" and panoptic.size == size
    ids = rgb_to_segment_ids(np.asarray(panoptic))
    info = record["segments_info"]
    assert info, "the tiny model keeps at least one segment at threshold 0 for these images and vocabularies"
    assert [segment["id"] for segment in info] == list(range(1, len(info) + 1))
    assert set(np.unique(ids)) - {0} <= {segment["id"] for segment in info}
    for segment in info:
        assert set(segment) == {"id", "label_id", "label", "score", "was_fused", "area"}
        assert segment["area"] == int((ids == segment["id"]).sum())
        assert segment["label"] == labels[segment["label_id"]]
    assert sum(segment["area"] for segment in info) == int((ids > 0).sum())
    return record


def test_predict_writes_consistent_files(checkpoint, image_files, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            *image_files,
            "--model",
            checkpoint,
            "--labels",
            "cat,person|child,grass|lawn",
            "--stuff",
            "grass",
            "--out",
            str(out),
            "--batch_size",
            "2",
        ],
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2/2" in captured.err  # the progress bar
    assert sorted(path.name for path in out.iterdir()) == [
        "park.json",
        "park_overlay.png",
        "park_panoptic.png",
        "street.json",
        "street_overlay.png",
        "street_panoptic.png",
    ]
    for image_path in image_files:
        record = check_outputs(out, image_path, ["cat", "person", "grass"])
        assert all(segment["was_fused"] == (segment["label"] == "grass") for segment in record["segments_info"])


def test_predict_matches_the_pipeline(checkpoint, image_files, tmp_path):
    from transformers import pipeline

    assert main([image_files[0], "--model", checkpoint, "--labels", "cat,dog", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "street.json", encoding="utf-8") as handle:
        written = json.load(handle)["segments_info"]
    expected = pipeline("open-vocab-panoptic", model=checkpoint, device="cpu")(
        image_files[0], candidate_labels=["cat", "dog"], return_panoptic_map=True
    )
    assert [{k: v for k, v in s.items() if k != "area"} for s in written] == expected["segments_info"]
    ids = rgb_to_segment_ids(np.asarray(PIL.Image.open(tmp_path / "street_panoptic.png")))
    np.testing.assert_array_equal(ids, expected["segmentation"])


@pytest.mark.parametrize("subtask", ["instance", "semantic"])
def test_predict_other_subtasks_and_default_vocabulary(checkpoint, image_files, tmp_path, subtask):
    # No --labels / --vocab: the model's own vocabulary (cat, dog, grass).
    assert main([image_files[1], "--model", checkpoint, "--out", str(tmp_path), "--subtask", subtask]) == 0
    check_outputs(tmp_path, image_files[1], ["cat", "dog", "grass"])


def test_predict_through_the_possam_command_with_a_vocabulary_file(checkpoint, image_files, tmp_path):
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("3:cat:thing\n5:tree,trees:stuff\n")
    # Semantic: every pixel gets a class, so the random model's result is never empty.
    code = cli.main(
        [
            "predict",
            image_files[0],
            "--model",
            checkpoint,
            "--vocab",
            str(vocabulary),
            "--out",
            str(tmp_path),
            "--subtask",
            "semantic",
        ]
    )
    assert code == 0
    check_outputs(tmp_path, image_files[0], ["cat", "tree"])


def test_class_lists_use_commas_between_classes_and_bars_between_synonyms():
    assert parse_class_list(" cat, person | child ,grass", "--labels") == ["cat", "person,child", "grass"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def test_missing_image_exits_1_naming_it(checkpoint, image_files, tmp_path, capsys):
    missing = str(tmp_path / "nope.png")
    assert main([image_files[0], missing, "--model", checkpoint, "--out", str(tmp_path / "out")]) == 1
    assert error_line(capsys) == f"possam predict: error: image {missing!r} does not exist."
    assert not (tmp_path / "out").exists()  # checked before the model is loaded or anything is written


@pytest.mark.parametrize("batch_size", [1, 4])
def test_unreadable_images_are_reported_after_every_readable_one_is_written(
    checkpoint, image_files, tmp_path, capsys, batch_size
):
    broken, empty = tmp_path / "broken.jpg", tmp_path / "empty.png"
    broken.write_bytes(b"\x89PNG not really")
    empty.write_bytes(b"")
    third = tmp_path / "third.png"
    random_image(40, 40, seed=2).save(third)
    images = [image_files[0], str(broken), image_files[1], str(empty), str(third)]
    out = tmp_path / "out"
    code = main([*images, "--model", checkpoint, "--out", str(out), "--batch_size", str(batch_size)])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 2, captured.err
    assert errors[0].startswith("possam predict: error: image 2 of 5: cannot read image file") and str(broken) in errors[0]
    assert errors[1].startswith("possam predict: error: image 4 of 5: cannot read image file") and str(empty) in errors[1]
    assert sorted(path.name for path in out.iterdir()) == sorted(
        f"{stem}{suffix}" for stem in ("street", "park", "third") for suffix in (".json", "_overlay.png", "_panoptic.png")
    )
    assert f"3 of 5 images segmented; overlays, panoptic PNGs and JSON are in {out}" in captured.out


def test_no_readable_image_leaves_no_output_folder(checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"GIF89a")
    out = tmp_path / "new" / "out"
    assert main([str(broken), "--model", checkpoint, "--out", str(out)]) == 1
    assert "cannot read image file" in error_line(capsys)
    assert not (tmp_path / "new").exists()  # both folders it created are gone again


def test_unwritable_output_folder_fails_before_the_model_runs(checkpoint, image_files, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main([image_files[0], "--model", checkpoint, "--out", str(blocker)]) == 1
    assert error_line(capsys) == f"possam predict: error: output folder {str(blocker)!r} exists and is not a folder."
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions; a folder inside a file is unwritable for anyone
            locked = blocker / "sub"
        assert main([image_files[0], "--model", "no/such/model", "--out", str(locked)]) == 1
        line = error_line(capsys)
        assert line.startswith(f"possam predict: error: output folder {str(locked)!r} is not writable")
    finally:
        (tmp_path / "locked").chmod(0o700)


def test_outputs_are_written_atomically(checkpoint, image_files, tmp_path, monkeypatch):
    """A run interrupted while writing leaves the previous complete file, and no temporary file."""
    from possam.processing import output_files

    out = tmp_path / "out"
    assert main([image_files[0], "--model", checkpoint, "--labels", "cat,dog", "--out", str(out)]) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    real_replace = os.replace
    calls = []

    def interrupted_replace(source, target):
        calls.append(target)
        if len(calls) == 2:  # the overlay went through, the panoptic PNG is "interrupted"
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(output_files.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        main([image_files[0], "--model", checkpoint, "--labels", "grass,sky", "--out", str(out)])
    after = {path.name: path.read_bytes() for path in out.iterdir()}
    assert set(after) == set(before)  # no temporary file left
    assert after["street_panoptic.png"] == before["street_panoptic.png"]
    assert after["street.json"] == before["street.json"]


@pytest.mark.parametrize("kind", ["missing", "file", "no_config", "sibling_typo"])
def test_bad_model_path_exits_1_naming_it(image_files, tmp_path, capsys, kind):
    model = tmp_path / "model"
    if kind == "file":
        model.write_text("not a model")
    elif kind == "no_config":
        model.mkdir()
    elif kind == "sibling_typo":
        model.mkdir()
        model = tmp_path / "modell"
    assert main([image_files[0], "--model", str(model), "--out", str(tmp_path / "out")]) == 1
    line = error_line(capsys)
    assert line.startswith(f"possam predict: error: {model}:")
    expected = {
        "missing": "no such model folder.",
        "file": "is a file, not a model folder",
        "no_config": "no config.json in this folder",
        "sibling_typo": f"no such model folder (did you mean {str(tmp_path / 'model')!r}?)",
    }[kind]
    assert expected in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--labels", "cat,,dog"], "--labels: empty class name in item 2"),
        (["--stuff", "grass"], "--stuff needs --labels"),
        (["--labels", "cat,dog", "--stuff", "sky"], "'sky' is not one of the candidate labels"),
        (["--labels", "cat,cat"], "Duplicate labels"),
        (["--labels", "ball|sky,sky"], "The name 'sky' is given to two classes, 1 ('ball') and 2 ('sky')"),
        (["--labels", "cat", "--vocab", "coco_panoptic"], "not allowed with argument"),
        (["--subtask", "depth"], "invalid choice: 'depth'"),
        (["--batch_size", "0"], "--batch_size must be at least 1"),
        (["--mask_threshold", "2"], r"--mask_threshold must be in [0, 1]"),
    ],
)
def test_bad_usage_exits_2(checkpoint, image_files, tmp_path, capsys, arguments, message):
    code = main([image_files[0], "--model", checkpoint, "--out", str(tmp_path), *arguments])
    assert code == 2
    assert message in error_line(capsys)


def test_same_stem_twice_and_missing_model_are_usage_errors(image_files, tmp_path, capsys):
    other = tmp_path / "street.jpg"
    PIL.Image.new("RGB", (8, 8)).save(other)
    assert main([image_files[0], str(other), "--model", "m", "--out", str(tmp_path)]) == 2
    assert "would write the same output files street_*" in error_line(capsys)
    assert main([image_files[0], "--out", str(tmp_path)]) == 2
    assert "the following arguments are required: --model" in error_line(capsys)
    assert main(["--help"]) == 0
    assert "person|child" in capsys.readouterr().out


def test_vocabulary_file_errors_name_the_file(checkpoint, image_files, tmp_path, capsys):
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_bytes("1:cat\n2:dog\n".encode("utf-16"))
    assert main([image_files[0], "--model", checkpoint, "--vocab", str(vocabulary), "--out", str(tmp_path / "o")]) == 1
    assert error_line(capsys) == f"possam predict: error: {vocabulary}: the file is UTF-16 encoded; save it as UTF-8."
    vocabulary.write_text("1:cat\n2:dog\n1:bird\n")
    assert main([image_files[0], "--model", checkpoint, "--vocab", str(vocabulary), "--out", str(tmp_path / "o")]) == 1
    assert error_line(capsys).endswith(f"{vocabulary}, line 3: id 1 was already given on line 1.")
    assert not (tmp_path / "o").exists()


def test_a_sixteen_bit_png_is_segmented(checkpoint, tmp_path, capsys):
    image = tmp_path / "depth16.png"
    PIL.Image.fromarray(np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)).save(image)
    assert main([str(image), "--model", checkpoint, "--out", str(tmp_path / "out"), "--subtask", "semantic"]) == 0
    assert "error" not in capsys.readouterr().err
    check_outputs(tmp_path / "out", str(image), ["cat", "dog", "grass"])
