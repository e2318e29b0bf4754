"""What `possam train` and `possam evaluate` do, as functions: build the model, the processor and the datasets."""

from __future__ import annotations

import json
import os

import torch.distributed as dist

from .. import PosSamModel, possam_preset
from ..processing import PosSamProcessor, embed_default_vocabulary
from .arguments import DataArguments, ModelArguments
from .coco_panoptic import load_coco_panoptic
from .collator import PosSamDataCollator
from .dataset import PanopticEvaluationDataset, PanopticTrainingDataset
from .evaluation import evaluate_panoptic
from .feature_cache import build_feature_cache
from .trainer import PosSamTrainer, PosSamTrainingArguments


def leave_process_group() -> None:
    """In a distributed run, wait for every process, then leave the process group.

    A process that exits while a peer still talks to it makes gloo abort that peer (SIGABRT), failing a run that
    finished its work.
    """
    if dist.is_available() and dist.is_initialized():
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


def load_split(annotations: str, images: str, panoptic: str | None, synonyms: str | None):
    if not annotations or not images:
        raise ValueError("A data split needs both its annotations JSON and its image folder.")
    return load_coco_panoptic(annotations, images, panoptic, synonyms_from=synonyms)


def evaluation_parts(model, processor, data_args: DataArguments):
    """(dataset, collator, vocabulary) of the evaluation split, or Nones when there is none."""
    if not data_args.eval_annotations:
        return None, None, None
    dataset, vocabulary = load_split(
        data_args.eval_annotations, data_args.eval_images, data_args.eval_panoptic, data_args.eval_synonyms
    )
    collator = PosSamDataCollator(processor.encode_vocabulary(vocabulary))
    return PanopticEvaluationDataset(dataset, processor.image_processor), collator, vocabulary


def train(model_args: ModelArguments, data_args: DataArguments, training_args: PosSamTrainingArguments) -> dict:
    """Trains (or resumes), saves the model and processor to `output_dir`, evaluates if an eval split is given."""
    model = build_model(model_args)
    processor = build_processor(model, model_args.model_name_or_path)
    dataset, vocabulary = load_split(
        data_args.train_annotations, data_args.train_images, data_args.train_panoptic, data_args.synonyms
    )
    text_inputs = processor.encode_vocabulary(vocabulary)
    if data_args.cache_features:
        fixed = PanopticTrainingDataset(dataset, processor.image_processor, augment=False)
        cache_dir = data_args.feature_cache_dir or os.path.join(training_args.output_dir, "feature_cache")
        fingerprint = f"{os.path.abspath(data_args.train_annotations)}:{len(dataset)}"
        train_dataset = build_feature_cache(model.to(training_args.device), fixed, cache_dir, fingerprint)
    else:
        train_dataset = PanopticTrainingDataset(
            dataset, processor.image_processor, seed=training_args.seed,
            min_scale=data_args.min_scale, max_scale=data_args.max_scale,
        )
    eval_dataset, eval_collator, eval_vocabulary = evaluation_parts(model, processor, data_args)
    trainer = PosSamTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=PosSamDataCollator(text_inputs),
        processing_class=processor,
        eval_collator=eval_collator,
        eval_vocabulary=eval_vocabulary,
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = dict(result.metrics)
    # The fine-tuned model answers with its training classes when asked without a vocabulary.
    model.config.training_vocabulary = vocabulary.entries
    embed_default_vocabulary(model, processor, vocabulary)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
    return metrics


def evaluate(model_args: ModelArguments, data_args: DataArguments, accelerator) -> dict:
    """Evaluates a model on the evaluation split: PQ/SQ/RQ (all, things, stuff), mask AP, mIoU. Under several
    processes (`accelerate launch`, `torchrun`) each evaluates a share of the images."""
    if not data_args.eval_annotations:
        raise ValueError("possam evaluate needs --eval_annotations and --eval_images.")
    model = build_model(model_args).to(accelerator.device)
    processor = build_processor(model, model_args.model_name_or_path)
    dataset, collator, vocabulary = evaluation_parts(model, processor, data_args)
    modes = data_args.ensemble_mode.split(",") if data_args.ensemble_mode else None
    return evaluate_panoptic(
        model, dataset, collator, processor.image_processor, vocabulary,
        accelerator=accelerator, threshold=data_args.eval_threshold,
        ensemble_mode=modes[0] if modes and len(modes) == 1 else modes,
    )
