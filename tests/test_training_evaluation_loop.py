"""Evaluation through transformers' own loop: `compute_metrics` batch by batch, `Trainer.evaluate` / `predict`, a
plain `transformers.Trainer` with `eval_strategy`, best-model loading on `pq`, and resuming from the last complete
checkpoint."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model, tiny_processor
from safetensors.torch import load_file
from test_training_trainer import make_trainer as make_synthetic_trainer
from test_training_trainer import splits_and_vocabularies
from transformers import Trainer, TrainingArguments

from possam.cli import main as possam_main
from possam.training import (
    PanopticEvaluationDataset,
    PanopticMetrics,
    PanopticTrainingDataset,
    PosSamDataCollator,
    evaluate_panoptic,
)
from possam.training.checkpoint_checks import last_complete_checkpoint


PANOPTIC_KEYS = {f"{metric}{group}" for metric in ("pq", "sq", "rq") for group in ("", "_things", "_stuff", "_seen", "_unseen")}
METRIC_KEYS = PANOPTIC_KEYS | {"map", "ap50", "ap75", "miou", "pacc"}


def make_trainer(splits, output_dir, model=None, **overrides):
    """test_training_trainer's trainer: 2 steps, evaluation batches of 3 (the last one padded), 2 seen classes."""
    return make_synthetic_trainer(
        splits, output_dir, model, num_seen_classes=2, **{"max_steps": 2, "per_device_eval_batch_size": 3, **overrides}
    )


def test_evaluate_runs_the_trainers_loop_batch_by_batch_and_equals_the_standalone_evaluation(
    synthetic_splits, tmp_path, monkeypatch
):
    trainer = make_trainer(synthetic_splits, tmp_path)
    calls = []
    original = PanopticMetrics.__call__

    def spy(self, eval_pred, compute_result=False):
        calls.append(compute_result)
        return original(self, eval_pred, compute_result)

    monkeypatch.setattr(PanopticMetrics, "__call__", spy)
    metrics = trainer.evaluate()
    assert calls == [False, True]  # 4 images in batches of 3: one call per batch, the result on the last
    assert {f"eval_{name}" for name in METRIC_KEYS} | {"eval_loss"} <= set(metrics)
    assert metrics["eval_loss"] > 0
    standalone = evaluate_panoptic(
        trainer.model, trainer.eval_dataset, trainer.eval_collator, trainer.processing_class.image_processor,
        trainer.eval_vocabulary, batch_size=2, show_progress=False, seen_classes=trainer.compute_metrics.seen_classes,
    )
    for name in METRIC_KEYS:
        assert metrics[f"eval_{name}"] == pytest.approx(standalone[f"eval_{name}"], nan_ok=True), name
    assert any(entry.get("eval_pq") == metrics["eval_pq"] for entry in trainer.state.log_history)


def test_predict_returns_the_outputs_of_every_batch_and_the_metrics(synthetic_splits, tmp_path):
    trainer = make_trainer(synthetic_splits, tmp_path)
    evaluated = trainer.evaluate()
    predicted = trainer.predict(trainer.eval_dataset)
    assert len(predicted.predictions) == 2  # batches (eval_do_concat_batches=False)
    class_logits, masks, iou, clip_logits = predicted.predictions[0][:4]
    num_classes = len(trainer.eval_vocabulary)
    assert class_logits.shape == (3, 10, num_classes + 1) and clip_logits.shape == (3, 10, num_classes)
    assert masks.shape == (3, 10, 32, 32) and iou.shape == (3, 10)
    # Labels: each image's class ids, padded with -100 (gatherable across processes).
    assert predicted.label_ids[0].shape[0] == 3 and (predicted.label_ids[0] >= -100).all()
    for name in METRIC_KEYS:
        assert predicted.metrics[f"test_{name}"] == pytest.approx(evaluated[f"eval_{name}"], nan_ok=True), name


def test_plain_transformers_trainer_evaluates_during_training_with_the_possam_collator(synthetic_splits, tmp_path):
    processor = tiny_processor()
    train, vocabulary, val, _ = splits_and_vocabularies(synthetic_splits)
    model = tiny_model()
    eval_dataset = PanopticEvaluationDataset(val, processor.image_processor)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, per_device_eval_batch_size=2,
            eval_strategy="steps", eval_steps=2, save_strategy="no", report_to="none", use_cpu=True,
            disable_tqdm=True, remove_unused_columns=False, label_names=["mask_labels", "class_labels"],
            batch_eval_metrics=True, eval_do_concat_batches=False,
        ),
        train_dataset=PanopticTrainingDataset(train, processor.image_processor, seed=0),
        eval_dataset=eval_dataset,
        data_collator=PosSamDataCollator(processor.encode_vocabulary(vocabulary)),
        compute_metrics=PanopticMetrics(processor.image_processor, vocabulary, model.config, dataset=eval_dataset),
    )
    trainer.train()
    evaluations = [entry for entry in trainer.state.log_history if "eval_pq" in entry]
    assert [entry["step"] for entry in evaluations] == [2, 4]
    assert all({"eval_loss", "eval_pq", "eval_pq_things", "eval_pq_stuff", "eval_map", "eval_miou"} <= set(entry) for entry in evaluations)
    assert "eval_pq_seen" not in evaluations[0]  # no seen classes given
    predicted = trainer.predict(eval_dataset)
    assert predicted.metrics["test_pq"] == pytest.approx(evaluations[-1]["eval_pq"], nan_ok=True)


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters() if parameter.requires_grad}


def test_best_model_on_pq_is_loaded_at_the_end(synthetic_splits, tmp_path):
    trainer = make_trainer(
        synthetic_splits, tmp_path, max_steps=4, eval_strategy="steps", eval_steps=2, save_strategy="steps",
        save_steps=2, load_best_model_at_end=True, metric_for_best_model="pq",
    )
    trainer.train()
    evaluations = {entry["step"]: entry["eval_pq"] for entry in trainer.state.log_history if "eval_pq" in entry}
    assert sorted(evaluations) == [2, 4]
    best_step = max(evaluations, key=lambda step: (evaluations[step], -step))  # ties keep the earlier checkpoint
    assert trainer.state.best_metric == evaluations[best_step]
    assert trainer.state.best_model_checkpoint == str(tmp_path / f"checkpoint-{best_step}")
    saved = load_file(str(tmp_path / f"checkpoint-{best_step}" / "model.safetensors"))
    other = load_file(str(tmp_path / f"checkpoint-{6 - best_step}" / "model.safetensors"))
    current = trainable_state(trainer.model)
    name = next(name for name in current if name in saved and not torch.equal(saved[name], other[name]))
    assert torch.equal(current[name], saved[name]) and not torch.equal(current[name], other[name])


def test_resume_last_skips_a_partial_newer_checkpoint(synthetic_splits, tmp_path, caplog):
    output_dir = tmp_path / "run"
    train, val = synthetic_splits["train"], synthetic_splits["val"]
    base = ["--preset", "tiny", "--output_dir", str(output_dir), "--per_device_train_batch_size", "2", "--save_steps", "1",
            "--logging_steps", "1",
            "--report_to", "none", "--use_cpu", "--disable_tqdm", "true",
            "--train_annotations", train.json_path, "--train_images", train.image_dir, "--synonyms", train.vocabulary_path]
    assert possam_main(["train", *base, "--max_steps", "2"]) == 0
    # A run killed while writing checkpoint-3: weights and trainer state written, the optimizer state not yet.
    partial = output_dir / "checkpoint-3"
    shutil.copytree(output_dir / "checkpoint-2", partial)
    (partial / "optimizer.pt").unlink()
    caplog.set_level(logging.INFO, logger="possam.training.checkpoint_checks")
    assert last_complete_checkpoint(str(output_dir)) == str(output_dir / "checkpoint-2")
    assert "Skipping the partial checkpoint" in caplog.text and "optimizer state" in caplog.text
    caplog.clear()
    assert possam_main(["train", *base, "--max_steps", "3", "--resume_from_checkpoint", "last"]) == 0
    assert f"Resuming from {output_dir / 'checkpoint-2'}" in caplog.text
    state = json.loads((output_dir / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (output_dir / "checkpoint-3" / "optimizer.pt").exists()
    # Steps 1-2 come back from checkpoint-2's trainer state; step 3 was trained in this run.
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3]


def test_two_processes_evaluate_like_one(synthetic_splits, tmp_path):
    """4 images, 3 per process and batch: the second process's batch is padded by the loop; the gathered predictions
    drop the padding, and both processes' metrics equal one process's."""
    from test_training_distributed import free_port

    worker = str(Path(__file__).with_name("distributed_evaluation_worker.py"))
    val = synthetic_splits["val"]
    results = {}
    for processes in (2, 1):
        output_dir = tmp_path / f"processes{processes}"
        output_dir.mkdir()
        command = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}", worker, val.json_path, val.image_dir, str(output_dir), "3",
        ]
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
        assert result.returncode == 0, result.stderr[-4000:]
        results[processes] = json.loads((output_dir / "metrics.json").read_text())
    assert results[2]["world_size"] == 2
    # (eval_loss is a mean of per-batch losses: padded batches make it differ; the metrics must not.)
    for name in [f"eval_{name}" for name in METRIC_KEYS]:
        assert results[2][name] == pytest.approx(results[1][name], nan_ok=True), name
    assert results[1]["eval_pacc"] > 0
