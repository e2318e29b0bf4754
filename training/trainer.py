"""PosSamTrainer: transformers' Trainer with PosSAM's loss logging, optimizer groups, schedules and evaluation."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from ..loss import LOSS_NAMES
from .evaluation import evaluate_panoptic


@dataclass
class PosSamTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus PosSAM's recipe options (SPEC §4). Defaults differ from transformers' where the
    recipe says so: weight decay 0.05, full-model gradient clipping at 0.01, no column removal.

    lr_milestones (`list[int]`, *optional*):
        Steps at which the learning rate is multiplied by `lr_decay_factor` (the COCO recipe: 327778 and 355092 of
        368750). When set, this step schedule replaces `lr_scheduler_type`; use `lr_scheduler_type="polynomial"` with
        `lr_scheduler_kwargs={"power": 0.9}` for a poly schedule instead.
    lr_decay_factor (`float`, *optional*, defaults to 0.1):
        Multiplier applied at each milestone.
    """

    weight_decay: float = 0.05
    max_grad_norm: float = 0.01
    remove_unused_columns: bool = False
    lr_milestones: list[int] | None = field(default=None, metadata={"help": "Steps where the LR is multiplied by lr_decay_factor."})
    lr_decay_factor: float = field(default=0.1, metadata={"help": "LR multiplier at each of lr_milestones."})


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Parameters trained without weight decay: normalization layers, embeddings, and scalars (logit scales)."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Embedding)):
            names.update(f"{module_name}.{name}" if module_name else name for name, _ in module.named_parameters(recurse=False))
    for name, parameter in model.named_parameters():
        # The pixel decoder's level embedding is an nn.Parameter, not an nn.Embedding; logit scales are scalars.
        if parameter.ndim == 0 or name.endswith("level_embed"):
            names.add(name)
    return names


class PosSamTrainer(Trainer):
    """Trains PosSAM with the Trainer, and evaluates it as a panoptic segmenter (PQ, mask AP, mIoU).

    - `compute_loss` returns the model's loss and records its components (`loss_cross_entropy`, `loss_mask`,
      `loss_dice`, `loss_iou` of the final prediction), which are logged with the loss, averaged over the logging
      interval and over processes.
    - No weight decay on norms, embeddings and scalars; gradient clipping over the whole model (`max_grad_norm`).
    - `lr_milestones` gives the recipe's step schedule.
    - `evaluate` runs panoptic, instance and semantic inference on the evaluation dataset and reports PQ/SQ/RQ (all,
      things, stuff), mask AP and mIoU (see `training.evaluation`).
    """

    # The model's loss is a mean over its own batch, not normalized by `num_items_in_batch`.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, eval_collator=None, eval_vocabulary=None, **kwargs):
        """Takes the `Trainer` arguments plus, for `evaluate`: `eval_collator` (a `PosSamDataCollator` of the
        evaluated vocabulary) and `eval_vocabulary` (its `Vocabulary`: thing/stuff flags). `processing_class` must be
        the `PosSamProcessor` (or `PosSamImageProcessor`) whose post-processing evaluation uses."""
        super().__init__(*args, **kwargs)
        self.eval_collator = eval_collator
        self.eval_vocabulary = eval_vocabulary
        self._loss_component_sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.args.device))
        self._loss_component_count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if outputs.loss is None:
            raise ValueError("The batch has no labels: PosSamTrainer needs `mask_labels` and `class_labels` to train.")
        if model.training:
            for name in LOSS_NAMES:
                self._loss_component_sums[name] += outputs.loss_dict[name].detach()
            self._loss_component_count += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_component_count:
            for name, total in self._loss_component_sums.items():
                mean = self.accelerator.reduce(total / self._loss_component_count, reduction="mean")
                logs[name] = round(mean.item(), 4)
            self._loss_component_sums.clear()
            self._loss_component_count = 0
        super().log(logs, start_time)

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        excluded = no_decay_parameter_names(model)
        return [name for name, parameter in model.named_parameters() if parameter.requires_grad and name not in excluded]

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        milestones = self.args.lr_milestones
        if self.lr_scheduler is None and milestones:
            optimizer = optimizer or self.optimizer
            factor = self.args.lr_decay_factor
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: factor ** sum(step >= milestone for milestone in milestones)
            )
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if dataset is None or self.eval_collator is None or self.eval_vocabulary is None:
            raise ValueError("PosSamTrainer.evaluate needs an eval_dataset, eval_collator and eval_vocabulary.")
        image_processor = getattr(self.processing_class, "image_processor", self.processing_class)
        metrics = evaluate_panoptic(
            self.accelerator.unwrap_model(self.model),
            dataset,
            self.eval_collator,
            image_processor,
            self.eval_vocabulary,
            batch_size=self.args.per_device_eval_batch_size,
            num_workers=self.args.dataloader_num_workers,
            accelerator=self.accelerator,
            metric_key_prefix=metric_key_prefix,
            show_progress=not self.args.disable_tqdm,
        )
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
