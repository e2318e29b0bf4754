"""`possam train` / `possam evaluate` end to end: config file + overrides, checkpoints, cached features, errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model, tiny_processor

from possam.cli import main as possam_main
from possam.training import PanopticTrainingDataset, build_feature_cache, load_coco_panoptic
from possam.training.arguments import DataArguments, ModelArguments, parse_arguments
from possam.training.feature_cache import CachedFeaturesDataset
from possam.training.trainer import PosSamTrainingArguments


def data_flags(splits) -> list[str]:
    train, val = splits["train"], splits["val"]
    return [
        "--train_annotations", train.json_path, "--train_images", train.image_dir, "--synonyms", train.vocabulary_path,
        "--eval_annotations", val.json_path, "--eval_images", val.image_dir, "--eval_synonyms", val.vocabulary_path,
    ]


def test_config_file_values_are_overridden_by_flags(tmp_path):
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"preset": "tiny", "learning_rate": 5e-4, "max_steps": 7, "output_dir": str(tmp_path)}))
    model_args, data_args, training_args = parse_arguments(
        ["--config", str(config), "--max_steps", "3", "--cache_features"],
        (ModelArguments, DataArguments, PosSamTrainingArguments),
        "possam train",
    )
    assert training_args.learning_rate == 5e-4 and training_args.max_steps == 3 and data_args.cache_features
    assert training_args.weight_decay == 0.05 and training_args.max_grad_norm == 0.01  # the recipe's defaults
    yaml_config = tmp_path / "recipe.yaml"
    yaml_config.write_text("preset: tiny\nmin_scale: 0.5\noutput_dir: out\n")
    _, data_args, _ = parse_arguments(["--config", str(yaml_config)], (ModelArguments, DataArguments, PosSamTrainingArguments), "p")
    assert data_args.min_scale == 0.5


def test_config_file_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"learning_rat": 1e-4}))
    with pytest.raises(SystemExit):
        parse_arguments(["--config", str(bad)], (ModelArguments, DataArguments, PosSamTrainingArguments), "possam train")
    assert "unknown keys in" in capsys.readouterr().err and "learning_rat" in bad.read_text()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_arguments(["--config", str(tmp_path / "missing.json")], (ModelArguments,), "possam train")


def test_train_then_evaluate_from_the_command_line(synthetic_splits, tmp_path, capsys):
    output_dir = tmp_path / "run"
    flags = ["--preset", "tiny", "--output_dir", str(output_dir), "--max_steps", "2", "--per_device_train_batch_size", "2",
             "--learning_rate", "1e-3", "--save_steps", "1", "--report_to", "none", "--use_cpu", "--disable_tqdm", "true"]
    assert possam_main(["train", *flags, *data_flags(synthetic_splits)]) == 0
    printed = capsys.readouterr().out
    assert '"train_loss"' in printed and '"eval_pq"' in printed and '"eval_pq_seen"' in printed  # final metrics, JSON
    assert (output_dir / "model.safetensors").exists() and (output_dir / "processor_config.json").exists()
    assert (output_dir / "checkpoint-2" / "optimizer.pt").exists()
    saved = json.loads((output_dir / "config.json").read_text())
    assert saved["vocabulary"] == synthetic_splits["train"].vocabulary.entries  # the fine-tuned default vocabulary
    assert saved["training_vocabulary"] == synthetic_splits["train"].vocabulary.entries

    metrics_file = tmp_path / "metrics.json"
    val = synthetic_splits["val"]
    status = possam_main([
        "evaluate", "--model_name_or_path", str(output_dir), "--eval_annotations", val.json_path,
        "--eval_images", val.image_dir, "--output_json", str(metrics_file),
    ])
    assert status == 0
    metrics = json.loads(metrics_file.read_text())
    assert {"eval_pq", "eval_pq_things", "eval_pq_stuff", "eval_map", "eval_miou"} <= set(metrics)
    assert "eval_pq_seen" not in metrics  # no --seen_classes
    assert json.loads(capsys.readouterr().out) == metrics

    # Two ensemble modes on the same forward passes (geometric reads the saved training_vocabulary), and seen/unseen
    # classes by name.
    seen = ",".join(entry.split(",")[0] for entry in val.vocabulary.entries[:2])
    assert possam_main([
        "evaluate", "--model_name_or_path", str(output_dir), "--eval_annotations", val.json_path,
        "--eval_images", val.image_dir, "--output_json", str(metrics_file), "--ensemble_mode", "mase,geometric",
        "--seen_classes", seen,
    ]) == 0
    ablation = json.loads(metrics_file.read_text())
    for mode in ("mase", "geometric"):
        assert {f"eval_{mode}_{name}" for name in ("pq", "pq_seen", "pq_unseen", "map", "miou")} <= set(ablation)
    assert ablation["eval_mase_miou"] == pytest.approx(metrics["eval_miou"])  # mase is the config's default mode


def test_resume_from_checkpoint_flag(synthetic_splits, tmp_path):
    output_dir = tmp_path / "run"
    base = ["--preset", "tiny", "--output_dir", str(output_dir), "--per_device_train_batch_size", "2", "--save_steps", "1",
            "--report_to", "none", "--use_cpu", "--disable_tqdm", "true", *data_flags(synthetic_splits)[:6]]
    assert possam_main(["train", *base, "--max_steps", "1"]) == 0
    assert possam_main(["train", *base, "--max_steps", "2", "--resume_from_checkpoint", str(output_dir / "checkpoint-1")]) == 0
    state = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2


def test_command_line_errors_are_one_line(synthetic_splits, tmp_path, capsys):
    status = possam_main(["train", "--output_dir", str(tmp_path), "--train_annotations", str(tmp_path / "none.json"),
                          "--train_images", str(tmp_path), "--use_cpu"])
    assert status == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("possam train: error:") and "none" in error  # names the missing annotation path
    assert possam_main(["evaluate", "--preset", "tiny"]) == 1
    assert "needs --eval_annotations" in capsys.readouterr().err


def test_cached_features_equal_live_features_and_are_reused(synthetic_splits, tmp_path):
    model, processor = tiny_model().eval(), tiny_processor()
    dataset, _ = load_coco_panoptic(synthetic_splits["train"].json_path, synthetic_splits["train"].image_dir)
    fixed = PanopticTrainingDataset(dataset, processor.image_processor, augment=False)
    cached = build_feature_cache(model, fixed, str(tmp_path / "cache"), "synthetic:8")
    assert isinstance(cached, CachedFeaturesDataset) and len(cached) == len(fixed)
    item, live = cached[3], fixed[3]
    features = model.get_image_features(live["pixel_values"][None])
    assert torch.equal(item["sam_image_embeddings"], features.sam_image_embeddings[0])
    assert torch.equal(item["clip_image_features"], features.clip_image_features[0])
    assert "pixel_values" not in item and torch.equal(item["class_labels"], live["class_labels"])

    calls = []
    model.sam.register_forward_hook(lambda *args: calls.append(1))
    build_feature_cache(model, fixed, str(tmp_path / "cache"), "synthetic:8")
    assert calls == []  # same towers, same data: the cache is reused
    other = tiny_model()
    with torch.no_grad():
        other.sam.vision_encoder.neck.conv1.weight.add_(1.0)
    other.sam.register_forward_hook(lambda *args: calls.append(1))
    build_feature_cache(other, fixed, str(tmp_path / "cache"), "synthetic:8")
    assert len(calls) == len(fixed)  # different tower weights: rebuilt


def test_training_on_cached_features_matches_training_on_pixels(synthetic_splits, tmp_path):
    """Cached features are the frozen towers' output, so a step on them is the step on the same fixed pixels."""
    from possam.training import PosSamDataCollator

    processor = tiny_processor()
    dataset, vocabulary = load_coco_panoptic(synthetic_splits["train"].json_path, synthetic_splits["train"].image_dir)
    fixed = PanopticTrainingDataset(dataset, processor.image_processor, augment=False)
    collator = PosSamDataCollator(processor.encode_vocabulary(vocabulary))
    model = tiny_model().train()
    cached = build_feature_cache(model, fixed, str(tmp_path / "cache"), "synthetic:8")
    torch.manual_seed(0)
    from_pixels = model(**collator([fixed[0], fixed[1]])).loss
    torch.manual_seed(0)
    from_cache = model(**collator([cached[0], cached[1]])).loss
    torch.testing.assert_close(from_cache, from_pixels)


def test_python_dash_m_possam_is_the_command_line():
    """`accelerate launch -m possam train` and `torchrun -m possam train` (README's recipe) run `python -m possam`."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "possam", "train", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--resume_from_checkpoint" in result.stdout and "--cache_features" in result.stdout
