"""The open-vocabulary experiment's steps, shared by `possam demo` and `benchmarks/open_vocabulary.py`.

    towers: a toy CLIP pretrained on all classes (or random), a random tiny SAM, saved as checkpoint folders;
    train:  PosSAM on those towers through `possam train`'s code path, on the seen classes' labels only;
    measure: PQ on seen and unseen classes, for every class-ensemble mode from the same forward passes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict

from .arguments import DataArguments, ModelArguments
from .clip_pretraining import ClipPretrainingArguments, load_pretraining_record, pretrain_toy_clip
from .coco_panoptic import load_coco_panoptic
from .collator import PosSamDataCollator
from .dataset import PanopticEvaluationDataset
from .evaluation import evaluate_panoptic
from .synthetic import SyntheticPanopticDataset


METRICS = ("pq", "pq_seen", "pq_unseen", "pq_things", "pq_stuff")

# The demo's recipe: batch 4, AdamW at 1e-3 after 20 warm-up steps; the scenes are only 128 px, so the jitter is
# narrower than the real recipe's 0.1-2.0, keeping small objects visible.
TRAINING_RECIPE = {"per_device_train_batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 20}
JITTER = {"min_scale": 0.5, "max_scale": 1.5}


def prepare_toy_clip(folder: str, steps: int, seed: int) -> tuple[dict, bool]:
    """The toy CLIP in `folder`, pretrained now unless a previous run left one with the same settings there
    (`steps=0`: random towers). Returns (its `pretraining.json` record, whether it was re-used)."""
    args = ClipPretrainingArguments(steps=steps, seed=seed)
    record = load_pretraining_record(folder)
    if record is not None and record.get("arguments") == asdict(args):
        return record, True
    return pretrain_toy_clip(folder, args), False


def save_random_sam(folder: str, seed: int) -> None:
    """The tiny preset's random SAM image encoder as a transformers folder (what `--sam_checkpoint` takes)."""
    from transformers import SamVisionModel, set_seed

    from ..configuration import possam_preset

    set_seed(seed)
    SamVisionModel(possam_preset("tiny").sam_vision_config).save_pretrained(folder)


def model_arguments(sam_dir: str, clip_dir: str, **config_overrides) -> ModelArguments:
    """PosSAM-tiny's trainable parts on the given towers (`possam train --sam_checkpoint ... --clip_checkpoint ...`)."""
    overrides = json.dumps(config_overrides) if config_overrides else None
    return ModelArguments(preset="tiny", sam_checkpoint=sam_dir, clip_checkpoint=clip_dir, config_overrides=overrides)


def train_on_seen_classes(
    model_args: ModelArguments, train_split: SyntheticPanopticDataset, output_dir: str, steps: int, seed: int
) -> None:
    """Trains and saves PosSAM (model + processor in `output_dir`) with `possam train`'s `train` on a split whose
    labels are the seen classes only; the towers stay frozen."""
    from transformers import set_seed

    from .run import train
    from .trainer import PosSamTrainingArguments

    set_seed(seed)
    train(
        model_args,
        DataArguments(train_annotations=train_split.json_path, train_images=train_split.image_dir,
                      synonyms=train_split.vocabulary_path, **JITTER),
        PosSamTrainingArguments(
            output_dir=output_dir, max_steps=steps, logging_steps=max(1, steps // 10), save_strategy="no",
            report_to="none", seed=seed, use_cpu=True, **TRAINING_RECIPE,
        ),
    )


def evaluate_seen_unseen(
    model,
    processor,
    split: SyntheticPanopticDataset,
    seen_classes: Sequence[str],
    ensemble_modes: Sequence[str] | None = None,
    batch_size: int = 4,
) -> dict:
    """PQ (all, seen, unseen, things, stuff; percent, 1 decimal) of `model` on a split labelled with every class,
    through `evaluate_panoptic` (one forward pass per batch serves every ensemble mode).

    Args:
        processor: the `PosSamProcessor` of the model (input size, tokenizer, prompt templates).
        split: evaluation scenes (`generate_world_split(..., labels="all")`).
        seen_classes: names of the training classes (the rest count as unseen).
        ensemble_modes: `None` for the model's own `config.ensemble_mode` (returns one flat dict), or a list of modes
            (returns `{mode: flat dict}`).
    """
    dataset, vocabulary = load_coco_panoptic(split.json_path, split.image_dir, synonyms_from=split.vocabulary_path)
    modes = list(ensemble_modes) if ensemble_modes is not None else [model.config.ensemble_mode]
    metrics = evaluate_panoptic(
        model, PanopticEvaluationDataset(dataset, processor.image_processor),
        PosSamDataCollator(processor.encode_vocabulary(vocabulary)), processor.image_processor, vocabulary,
        batch_size=batch_size, ensemble_mode=modes, seen_classes=list(seen_classes), show_progress=False,
    )
    per_mode = {mode: {name: round(float(metrics[f"eval_{mode}_{name}"]), 1) for name in METRICS} for mode in modes}
    return per_mode if ensemble_modes is not None else per_mode[modes[0]]
