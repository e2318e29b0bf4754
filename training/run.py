"""What `possam train` and `possam evaluate` do, as functions: build the model, the processor and the datasets."""

from __future__ import annotations

import gc
import json
import os

import torch.distributed as dist
from transformers import set_seed

from .. import PosSamModel, possam_preset
from ..configuration.vocabulary import SHIPPED_VOCABULARIES, load_vocabulary
from ..model_card import TRAINING_ARGS_NAME, save_results, tower_parameter_counts, write_model_card
from ..processing import PosSamProcessor, embed_default_vocabulary
from .arguments import DataArguments, ModelArguments, evaluation_data_name
from .coco_panoptic import load_coco_panoptic
from .checkpoint_checks import check_resume_checkpoint, resolve_resume_checkpoint
from .collator import PosSamDataCollator
from .dataset import PanopticEvaluationDataset, PanopticTrainingDataset
from .evaluation import evaluate_panoptic
from .feature_cache import build_feature_cache
from .hub_panoptic import load_hub_panoptic
from .trainer import PosSamTrainer, PosSamTrainingArguments
from .validation import checked_dataset, dataset_fingerprint


def leave_process_group() -> None:
    """In a distributed run, wait for every process, then leave the process group.

    A process that exits while a peer still talks to it makes gloo abort that peer (SIGABRT), failing a run that
    finished its work. Unreachable trainers are collected first: a DDP wrapper kept alive by a reference cycle holds
    the process group, which would then be destroyed during interpreter shutdown instead of here.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def build_model(args: ModelArguments) -> PosSamModel:
    """A checkpoint, a model built on pretrained SAM/CLIP, or a preset with random weights (in that order)."""
    overrides = json.loads(args.config_overrides) if args.config_overrides else {}
    if args.model_name_or_path:
        return PosSamModel.from_pretrained(args.model_name_or_path, **overrides)
    if args.sam_checkpoint or args.clip_checkpoint:
        if not (args.sam_checkpoint and args.clip_checkpoint):
            raise ValueError("Building PosSAM from pretrained backbones needs both --sam_checkpoint and --clip_checkpoint.")
        return PosSamModel.from_pretrained_backbones(
            sam=args.sam_checkpoint, clip=args.clip_checkpoint, config=args.preset, **overrides
        )
    return PosSamModel(possam_preset(args.preset, **overrides))


def build_processor(model: PosSamModel, model_name_or_path: str | None = None) -> PosSamProcessor:
    """The checkpoint's processor when it has one, else the shipped CLIP tokenizer and the model's input size."""
    if model_name_or_path and os.path.isfile(os.path.join(model_name_or_path, "processor_config.json")):
        return PosSamProcessor.from_pretrained(model_name_or_path)
    return PosSamProcessor.for_model_config(model.config)


def load_split(data_args: DataArguments, evaluation: bool = False):
    """(dataset, vocabulary) of the training or evaluation split, validated (`--validate_dataset`,
    `--skip_invalid`); (None, None) when there is no evaluation split."""
    if data_args.dataset_name:
        split = data_args.eval_split if evaluation else data_args.train_split
        if not split:
            return None, None
        synonyms = (data_args.eval_synonyms or data_args.synonyms) if evaluation else data_args.synonyms
        dataset, vocabulary = load_hub_panoptic(data_args.dataset_name, data_args.dataset_config, split, synonyms)
        source = f"dataset {data_args.dataset_name!r} split {split!r}"
    else:
        prefix = "eval" if evaluation else "train"
        annotations, images, panoptic = (getattr(data_args, f"{prefix}_{kind}") for kind in ("annotations", "images", "panoptic"))
        if evaluation and not annotations:
            return None, None
        if not annotations or not images:
            raise ValueError("A data split needs both its annotations JSON and its image folder (or use --dataset_name).")
        synonyms = data_args.eval_synonyms if evaluation else data_args.synonyms
        dataset, vocabulary = load_coco_panoptic(annotations, images, panoptic, synonyms_from=synonyms)
        source = repr(annotations)
    if data_args.validate_dataset:
        dataset = checked_dataset(dataset, source, data_args.skip_invalid, cache_dir=data_args.validation_cache_dir)
    return dataset, vocabulary


def seen_class_names(value: str | None) -> list[str] | None:
    """`--seen_classes`: a shipped vocabulary name or a vocabulary file (its class entries), else comma-separated
    class names."""
    if not value:
        return None
    if value in SHIPPED_VOCABULARIES or os.path.isfile(value):
        return load_vocabulary(value).entries
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--seen_classes {value!r} names no class.")
    return names


def ensemble_modes(data_args: DataArguments) -> str | list[str] | None:
    """`--ensemble_mode`: one mode, or comma-separated modes evaluated on the same forward passes."""
    if not data_args.ensemble_mode:
        return None
    modes = [mode.strip() for mode in data_args.ensemble_mode.split(",")]
    return modes[0] if len(modes) == 1 else modes


def evaluation_parts(model, processor, data_args: DataArguments):
    """(dataset, collator, vocabulary) of the evaluation split, or Nones when there is none."""
    dataset, vocabulary = load_split(data_args, evaluation=True)
    if dataset is None:
        return None, None, None
    collator = PosSamDataCollator(processor.encode_vocabulary(vocabulary))
    return PanopticEvaluationDataset(dataset, processor.image_processor), collator, vocabulary


def train(model_args: ModelArguments, data_args: DataArguments, training_args: PosSamTrainingArguments) -> dict:
    """Trains (or resumes), saves the model and processor to `output_dir`, evaluates if an eval split is given."""
    # "last": the newest complete checkpoint of output_dir (newer partial ones are skipped with a warning).
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    if isinstance(resume, str) and os.path.exists(resume):
        check_resume_checkpoint(resume)  # a damaged file fails at once in one line naming it, not deep in the Trainer
    set_seed(training_args.seed)  # a model built from a preset is then the same in every run with this seed
    model = build_model(model_args)
    processor = build_processor(model, model_args.model_name_or_path)
    with training_args.main_process_first(desc="dataset validation"):  # the main process fills the cache
        dataset, vocabulary = load_split(data_args)
        eval_dataset, eval_collator, eval_vocabulary = evaluation_parts(model, processor, data_args)
    text_inputs = processor.encode_vocabulary(vocabulary)
    if data_args.cache_features:
        fixed = PanopticTrainingDataset(dataset, processor.image_processor, augment=False)
        cache_dir = data_args.feature_cache_dir or os.path.join(training_args.output_dir, "feature_cache")
        fingerprint = dataset_fingerprint(dataset)
        train_dataset = build_feature_cache(model.to(training_args.device), fixed, cache_dir, fingerprint)
    else:
        train_dataset = PanopticTrainingDataset(
            dataset, processor.image_processor, seed=training_args.seed,
            min_scale=data_args.min_scale, max_scale=data_args.max_scale,
        )
    # The trained model answers `"geometric"` and seen/unseen metrics with its training classes.
    model.config.training_vocabulary = vocabulary.entries
    trainer = PosSamTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=PosSamDataCollator(text_inputs),
        processing_class=processor,
        eval_collator=eval_collator,
        eval_vocabulary=eval_vocabulary,
        seen_classes=seen_class_names(data_args.seen_classes) or vocabulary.entries,
        ensemble_mode=ensemble_modes(data_args),
    )
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(result.metrics)
    # The fine-tuned model answers with its training classes when asked without a vocabulary.
    embed_default_vocabulary(model, processor, vocabulary)
    output_dir = training_args.output_dir
    if trainer.is_world_process_zero():
        # Written before the model so that its card (written by save_pretrained) describes the training.
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, TRAINING_ARGS_NAME), "w", encoding="utf-8") as handle:
            handle.write(training_args.to_json_string())
    trainer.save_model(output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
    if eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        metrics.update(eval_metrics)
        if trainer.is_world_process_zero():
            save_results(output_dir, eval_metrics, evaluation_data_name(data_args))
            write_model_card(output_dir, model.config, tower_parameter_counts(model))
    return metrics


def evaluate(model_args: ModelArguments, data_args: DataArguments, accelerator) -> dict:
    """Evaluates a model on the evaluation split: PQ/SQ/RQ (all, things, stuff; seen and unseen with
    `--seen_classes`), mask AP, mIoU. Under several processes (`accelerate launch`, `torchrun`) each evaluates a share
    of the images."""
    if not (data_args.eval_annotations or (data_args.dataset_name and data_args.eval_split)):
        raise ValueError("possam evaluate needs --eval_annotations and --eval_images, or --dataset_name and --eval_split.")
    model = build_model(model_args).to(accelerator.device)
    processor = build_processor(model, model_args.model_name_or_path)
    with accelerator.main_process_first():
        dataset, collator, vocabulary = evaluation_parts(model, processor, data_args)
    return evaluate_panoptic(
        model, dataset, collator, processor.image_processor, vocabulary,
        accelerator=accelerator, threshold=data_args.eval_threshold,
        ensemble_mode=ensemble_modes(data_args), seen_classes=seen_class_names(data_args.seen_classes),
    )
