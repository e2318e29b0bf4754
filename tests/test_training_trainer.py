"""PosSamTrainer on the synthetic dataset: logging, evaluation, optimizer groups, schedule, caching, resuming."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import tiny_model, tiny_processor
from transformers import TrainerCallback

from possam.processing import resolve_vocabulary
from possam.training import (
    PanopticEvaluationDataset,
    PanopticTrainingDataset,
    PosSamDataCollator,
    PosSamTrainer,
    PosSamTrainingArguments,
    load_coco_panoptic,
)
from possam.training.trainer import no_decay_parameter_names


def splits_and_vocabularies(splits):
    train, vocabulary = load_coco_panoptic(splits["train"].json_path, splits["train"].image_dir, synonyms_from=splits["train"].vocabulary_path)
    val, val_vocabulary = load_coco_panoptic(splits["val"].json_path, splits["val"].image_dir, synonyms_from=splits["val"].vocabulary_path)
    return train, vocabulary, val, val_vocabulary


def make_trainer(splits, output_dir, model=None, callbacks=None, num_seen_classes=None, **overrides):
    """A PosSamTrainer of the tiny model on the synthetic splits; `num_seen_classes`: the first training classes count as
    seen in evaluation (`pq_seen` / `pq_unseen`)."""
    processor = tiny_processor()
    train, vocabulary, val, val_vocabulary = splits_and_vocabularies(splits)
    arguments = {
        "output_dir": str(output_dir), "max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
        "logging_steps": 1, "save_strategy": "no", "report_to": "none", "use_cpu": True, "disable_tqdm": True,
        "seed": 0, "data_seed": 0, **overrides,
    }
    return PosSamTrainer(
        model=model if model is not None else tiny_model(),
        args=PosSamTrainingArguments(**arguments),
        train_dataset=PanopticTrainingDataset(train, processor.image_processor, seed=0),
        eval_dataset=PanopticEvaluationDataset(val, processor.image_processor),
        data_collator=PosSamDataCollator(processor.encode_vocabulary(vocabulary)),
        processing_class=processor,
        eval_collator=PosSamDataCollator(processor.encode_vocabulary(val_vocabulary)),
        eval_vocabulary=val_vocabulary,
        callbacks=callbacks,
        seen_classes=vocabulary.entries[:num_seen_classes] if num_seen_classes else None,
    )


def training_losses(trainer) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}


def test_training_logs_loss_components_and_evaluation_reports_every_metric(synthetic_splits, tmp_path):
    trainer = make_trainer(synthetic_splits, tmp_path)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 4
    for entry in logged:
        components = [entry[name] for name in ("loss_cross_entropy", "loss_mask", "loss_dice", "loss_iou")]
        assert all(value > 0 for value in components)
        assert entry["loss"] > sum(components)  # the total also weighs and sums the auxiliary predictions
    metrics = trainer.evaluate()
    expected = {f"eval_{name}" for name in ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff",
                                             "sq_stuff", "rq_stuff", "map", "ap50", "ap75", "miou", "pacc")}
    assert expected <= set(metrics)
    assert all(0.0 <= metrics[name] <= 100.0 for name in expected if metrics[name] == metrics[name])
    assert any(entry.get("eval_pq") == metrics["eval_pq"] for entry in trainer.state.log_history)


def test_text_tower_runs_once_per_vocabulary_in_a_run(synthetic_splits, tmp_path):
    model = tiny_model()
    calls = []
    model.clip.text.register_forward_hook(lambda module, args, output: calls.append(1))
    trainer = make_trainer(synthetic_splits, tmp_path, model=model)
    trainer.train()
    assert len(calls) == 1  # 4 steps, one vocabulary
    trainer.evaluate()
    assert len(calls) == 1  # the validation split has the same classes: served from the cache
    other = make_trainer(synthetic_splits, tmp_path, model=model)
    # Other names for the same classes (evaluation also computes the loss, so the class count must match the data).
    renamed = resolve_vocabulary([f"{entry.split(',')[0]} object" for entry in other.eval_vocabulary.entries])
    other.eval_collator = PosSamDataCollator(tiny_processor().encode_vocabulary(renamed))
    other.evaluate()
    other.evaluate()
    assert len(calls) == 2  # a new vocabulary is embedded once


def test_weight_decay_skips_norms_embeddings_and_scalars():
    model = tiny_model()
    excluded = no_decay_parameter_names(model)
    assert "text_classifier.logit_scale" in excluded
    assert "pixel_decoder.level_embed" in excluded
    assert "transformer_decoder.queries_features.weight" in excluded
    assert "text_classifier.void_embedding.weight" in excluded
    assert "ldp.sam_pooled_projection.0.weight" in excluded  # LayerNorm
    assert "fpn.project.0.1.weight" in excluded  # the pyramid's channel LayerNorm
    assert "pixel_decoder.input_projections.0.1.weight" in excluded  # GroupNorm
    trainer_names = set(PosSamTrainer.get_decay_parameter_names(None, model))
    assert "transformer_decoder.decoder.layers.0.fc1.weight" in trainer_names
    assert "iou_head.mlp.0.0.bias" in trainer_names  # biases are decayed, as in FC-CLIP
    assert not trainer_names & excluded
    assert not any(name.startswith(("sam.", "clip.")) for name in trainer_names)


def test_step_schedule_multiplies_the_learning_rate_at_milestones(synthetic_splits, tmp_path):
    trainer = make_trainer(synthetic_splits, tmp_path, lr_milestones=[2, 3], lr_decay_factor=0.1, learning_rate=1e-3)
    trainer.train()
    rates = {entry["step"]: entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry}
    # The rate each step used. As detectron2's multi-step schedule, a milestone counts completed steps: after 2
    # steps the rate drops once, after 3 twice.
    assert [rates[step] for step in (1, 2, 3, 4)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])


class StopAfterSaving(TrainerCallback):
    """Simulates an interruption right after the first checkpoint is written."""

    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def test_resumed_run_continues_exactly(synthetic_splits, tmp_path):
    settings = {"max_steps": 6, "save_strategy": "steps", "save_steps": 3, "dataloader_num_workers": 0}
    uninterrupted = make_trainer(synthetic_splits, tmp_path / "full", **settings)
    uninterrupted.train()
    expected = training_losses(uninterrupted)

    interrupted = make_trainer(synthetic_splits, tmp_path / "resumed", callbacks=[StopAfterSaving()], **settings)
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    checkpoint = tmp_path / "resumed" / "checkpoint-3"
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "optimizer.pt").exists()

    resumed = make_trainer(synthetic_splits, tmp_path / "resumed", **settings)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    actual = training_losses(resumed)  # steps 1-3 come back from the checkpoint's trainer state
    assert sorted(actual) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert actual[step] == pytest.approx(expected[step], rel=1e-5), (step, actual, expected)


def test_augmentation_depends_only_on_seed_epoch_and_index(synthetic_splits):
    processor = tiny_processor()
    dataset, _ = load_coco_panoptic(synthetic_splits["train"].json_path, synthetic_splits["train"].image_dir)
    first, second = (PanopticTrainingDataset(dataset, processor.image_processor, seed=3) for _ in range(2))
    second[0], second[2]  # consuming other items must not change item 1
    assert torch.equal(first[1]["pixel_values"], second[1]["pixel_values"])
    second.set_epoch(1)
    assert not torch.equal(first[1]["pixel_values"], second[1]["pixel_values"])
    item = first[1]
    assert item["mask_labels"].shape[0] == item["class_labels"].shape[0]
    assert item["ignore_mask"][item["pixel_mask"] == 0].all()  # padding is ignored by the loss
