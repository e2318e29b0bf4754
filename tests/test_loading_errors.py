"""Corrupted copies of a saved tiny PosSAM and of a training checkpoint: every command fails with exit status 1 and one
`error:` line naming the file at fault, never a traceback, never a silent run on half the weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from pipeline_testing import random_image, save_checkpoint, single_thread  # noqa: F401  (autouse fixture)
from safetensors.torch import load_file, save_file

from possam import PosSamModel
from possam.cli import main as possam_main
from possam.loading import ModelLoadError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("model"), store_default_vocabulary=False)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "street.png"
    random_image(40, 60, seed=0).save(path)
    return str(path)


def corrupted_copy(checkpoint, tmp_path, kind: str):
    folder = tmp_path / kind
    shutil.copytree(checkpoint, folder)
    weights = folder / "model.safetensors"
    if kind == "half_the_tensors":
        tensors = load_file(weights)
        kept = sorted(tensors)[: len(tensors) // 2]
        save_file({key: tensors[key] for key in kept}, weights, metadata={"format": "pt"})
    elif kind == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif kind == "pickle_bin":
        weights.unlink()
        torch.save({"weights": print}, folder / "pytorch_model.bin")  # refused by weights_only
    elif kind == "only_config":
        for path in folder.iterdir():
            if path.name != "config.json":
                path.unlink()
    elif kind == "wrong_shape":
        tensors = load_file(weights)
        tensors["iou_head.mlp.0.0.weight"] = torch.zeros(3, 5)
        save_file(tensors, weights, metadata={"format": "pt"})
    elif kind == "bert":
        (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    return folder


EXPECTED = {
    "half_the_tensors": ("model.safetensors: does not fit the model of its config.json: ", " weights missing ("),
    "truncated": ("model.safetensors: cannot be read, the file is truncated or not a checkpoint", "incomplete metadata"),
    "pickle_bin": ("pytorch_model.bin: cannot be loaded: a pickle holding more than tensors", "Unsupported global"),
    "only_config": ("only_config: no weights file in this folder (expected model.safetensors)", "['config.json']"),
    "wrong_shape": ("1 weights of the wrong shape (iou_head.mlp.0.0.weight (3, 5) vs model (32, 32))", "strict=False"),
    "bert": ("bert/config.json: describes a 'bert' model, not PosSAM", "model_type 'possam'"),
}


def one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "LOAD REPORT" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0]


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_predict_refuses_a_corrupted_model_in_one_line(checkpoint, image, tmp_path, capsys, kind):
    folder = corrupted_copy(checkpoint, tmp_path, kind)
    out = tmp_path / "out"
    assert possam_main(["predict", image, "--model", str(folder), "--out", str(out)]) == 1
    line = one_error_line(capsys, "possam predict")
    for part in EXPECTED[kind]:
        assert part in line
    assert str(folder) in line
    assert not out.exists()  # the empty output folder is removed again


def test_missing_weights_name_count_and_first_names_and_can_be_allowed(checkpoint, tmp_path):
    folder = corrupted_copy(checkpoint, tmp_path, "half_the_tensors")
    missing = sorted(set(load_file(f"{checkpoint}/model.safetensors")) - set(load_file(folder / "model.safetensors")))
    with pytest.raises(ModelLoadError) as raised:
        PosSamModel.from_pretrained(folder)
    message = str(raised.value)
    assert "\n" not in message
    assert f"{len(missing)} weights missing ({', '.join(missing[:5])}, ... {len(missing) - 5} more)" in message
    model, info = PosSamModel.from_pretrained(folder, strict=False, output_loading_info=True)  # asked explicitly
    assert sorted(info["missing_keys"]) == missing


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("kind", ["truncated", "bert", "half_the_tensors"])
def test_train_and_evaluate_refuse_a_corrupted_model_in_one_line(
    checkpoint, synthetic_splits, tmp_path, capsys, command, kind
):
    folder = corrupted_copy(checkpoint, tmp_path, kind)
    val = synthetic_splits["val"]
    data = ["--eval_annotations", val.json_path, "--eval_images", val.image_dir]
    if command == "train":
        data += ["--train_annotations", val.json_path, "--train_images", val.image_dir, "--output_dir",
                 str(tmp_path / "run"), "--use_cpu", "--report_to", "none"]
    assert possam_main([command, "--model_name_or_path", str(folder), *data]) == 1
    line = one_error_line(capsys, f"possam {command}")
    for part in EXPECTED[kind]:
        assert part in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["predict", "train", "evaluate"])
def test_a_local_path_that_does_not_exist_is_reported_at_once(image, tmp_path, capsys, monkeypatch, command):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("a missing local folder must not be looked up on the Hub")

    monkeypatch.setattr(huggingface_hub.file_download, "get_hf_file_metadata", no_network)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "possam-demo" / "model").mkdir(parents=True)
    for name, expected in [
        ("./nope", "./nope: no such model folder."),
        ("possam-demo/modell", "possam-demo/modell: no such model folder (did you mean 'possam-demo/model'?)."),
    ]:
        if command == "predict":
            arguments = ["predict", image, "--model", name, "--out", "out"]
        else:
            arguments = [command, "--model_name_or_path", name, "--eval_annotations", "a.json", "--eval_images", "."]
            if command == "train":
                arguments += ["--train_annotations", "a.json", "--train_images", ".", "--output_dir", "run", "--use_cpu"]
        assert possam_main(arguments) == 1
        assert one_error_line(capsys, f"possam {command}") == f"possam {command}: error: {expected}"


def train_flags(output_dir, split, max_steps: int) -> list[str]:
    return ["--preset", "tiny", "--output_dir", str(output_dir), "--max_steps", str(max_steps), "--save_steps", "1",
            "--per_device_train_batch_size", "2", "--report_to", "none", "--use_cpu", "--disable_tqdm", "true",
            "--train_annotations", split.json_path, "--train_images", split.image_dir]


@pytest.fixture(scope="module")
def training_checkpoint(synthetic_splits, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run")
    assert possam_main(["train", *train_flags(output_dir, synthetic_splits["train"], max_steps=1)]) == 0
    return output_dir / "checkpoint-1"


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("optimizer.pt", "optimizer.pt: cannot be read, the file is truncated or not a torch file"),
        ("trainer_state.json", "trainer_state.json: not readable JSON (Expecting value: line 1 column 17"),
        ("model.safetensors", "model.safetensors: cannot be read, the file is truncated or not a checkpoint"),
    ],
)
def test_resume_from_a_damaged_checkpoint_names_the_file(
    training_checkpoint, synthetic_splits, tmp_path, capsys, damage, expected
):
    checkpoint = tmp_path / "checkpoint-1"
    shutil.copytree(training_checkpoint, checkpoint)
    target = checkpoint / damage
    if damage == "trainer_state.json":
        target.write_text('{"global_step": }')
    else:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    flags = train_flags(tmp_path / "resumed", synthetic_splits["train"], max_steps=2)
    assert possam_main(["train", *flags, "--resume_from_checkpoint", str(checkpoint)]) == 1
    line = one_error_line(capsys, "possam train")
    assert line.startswith(f"possam train: error: {target}: ") and expected in line
    assert not (tmp_path / "resumed").exists()


def test_evaluate_checks_its_output_file_before_loading_anything(tmp_path, capsys):
    target = tmp_path / "missing-folder" / "metrics.json"
    code = possam_main(["evaluate", "--model_name_or_path", str(tmp_path / "no-model"), "--eval_annotations", "a.json",
                        "--eval_images", ".", "--output_json", str(target)])
    assert code == 1
    assert one_error_line(capsys, "possam evaluate") == (
        f"possam evaluate: error: cannot write {str(target)!r}: folder {str(target.parent)!r} does not exist."
    )


def test_an_unreachable_hub_is_reported_after_one_request(tmp_path, monkeypatch, image, capsys):
    """`models/nope` with no local `models` folder is a Hub id; with no network it fails after one quick request,
    not after transformers' retries."""
    import huggingface_hub

    requests = []

    def unreachable(repo_id, **kwargs):
        requests.append(repo_id)
        raise ConnectionError("[Errno -2] Name or service not known")

    def no_download(*args, **kwargs):
        raise AssertionError("transformers' download (and its retries) must not start")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # as on a machine meant to be online
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    monkeypatch.setattr(huggingface_hub.file_download, "get_hf_file_metadata", no_download)
    monkeypatch.chdir(tmp_path)
    assert possam_main(["predict", image, "--model", "models/nope", "--out", "out"]) == 1
    assert one_error_line(capsys, "possam predict") == (
        "possam predict: error: models/nope: no such local folder, and the Hugging Face Hub cannot be reached to load "
        "it as a Hub id ([Errno -2] Name or service not known)."
    )
    assert requests == ["models/nope"]
