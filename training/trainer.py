"""PosSamTrainer: transformers' Trainer with PosSAM's loss logging, optimizer groups, schedules and evaluation."""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import Trainer, TrainingArguments

from ..loss import LOSS_NAMES
from .panoptic_metrics import PanopticMetrics


@dataclass
class PosSamTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus PosSAM's recipe options (SPEC §4). Defaults differ from transformers' where the
    recipe says so: weight decay 0.05, full-model gradient clipping at 0.01, no column removal; and for evaluation
    through the Trainer's own loop: `label_names=["mask_labels", "class_labels"]` (they give `eval_loss` and make the
    loop call `compute_metrics`), `batch_eval_metrics=True` and `eval_do_concat_batches=False` (metrics accumulate
    batch by batch: memory stays flat over the evaluation set).

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
    label_names: list[str] | None = field(default_factory=lambda: ["mask_labels", "class_labels"])
    batch_eval_metrics: bool = True
    eval_do_concat_batches: bool = False
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
    - Evaluation and prediction run transformers' own loop (`evaluate`, `predict`, `eval_strategy`,
      `metric_for_best_model="pq"` with `load_best_model_at_end`): the evaluation batches are collated with the
      evaluated vocabulary (`eval_collator`), and `compute_metrics` defaults to a `PanopticMetrics` of
      `eval_vocabulary` reporting `eval_pq`, `eval_sq`, `eval_rq` (all, `_things`, `_stuff`, and `_seen` / `_unseen`
      with `seen_classes`), `eval_map`, `eval_ap50`, `eval_ap75`, `eval_miou`, `eval_pacc`, plus `eval_loss`.
    """

    # The model's loss is a mean over its own batch, not normalized by `num_items_in_batch`.
    loss_is_scaled_for_ga = False

    def __init__(
        self, *args, eval_collator=None, eval_vocabulary=None, seen_classes=None, ensemble_mode=None, **kwargs
    ):
        """Takes the `Trainer` arguments plus, for evaluation and prediction: `eval_collator` (a `PosSamDataCollator`
        of the evaluated vocabulary; default `data_collator`), `eval_vocabulary` (its `Vocabulary`: thing/stuff
        flags), and for the default `compute_metrics`: `seen_classes` (training class names, for seen/unseen PQ) and
        `ensemble_mode` (default `config.ensemble_mode`). `processing_class` must be the `PosSamProcessor` (or
        `PosSamImageProcessor`) whose post-processing evaluation uses."""
        model = kwargs.get("model", args[0] if args else None)
        if kwargs.get("compute_metrics") is None and eval_vocabulary is not None and model is not None:
            processing_class = kwargs.get("processing_class")
            if processing_class is None:
                raise ValueError(
                    "PosSamTrainer evaluates with post-processing: pass processing_class=PosSamProcessor (or "
                    "PosSamImageProcessor) along with eval_vocabulary."
                )
            kwargs["compute_metrics"] = PanopticMetrics(
                getattr(processing_class, "image_processor", processing_class),
                eval_vocabulary,
                model.config,
                ensemble_mode=ensemble_mode,
                seen_classes=seen_classes,
            )
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

    @contextmanager
    def _collating_evaluation_batches(self):
        """Evaluation batches carry the evaluated vocabulary, which may differ from the training one."""
        training_collator = self.data_collator
        if self.eval_collator is not None:
            self.data_collator = self.eval_collator
        try:
            yield
        finally:
            self.data_collator = training_collator

    def get_eval_dataloader(self, eval_dataset=None):
        with self._collating_evaluation_batches():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        with self._collating_evaluation_batches():
            return super().get_test_dataloader(test_dataset)

    def evaluation_loop(self, dataloader, *args, **kwargs):
        if isinstance(self.compute_metrics, PanopticMetrics):
            # The metrics compare predictions with the ground truth of the dataset this loop runs over.
            self.compute_metrics.dataset = dataloader.dataset
            self.compute_metrics.reset()
        return super().evaluation_loop(dataloader, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if isinstance(labels, tuple) and "class_labels" in self.label_names:
            # The metrics read the original-resolution ground truth from the dataset. Of the labels, only the class
            # ids are kept, padded with -100 into one tensor: the loop pads and gathers it across processes, which it
            # cannot do for lists of variable-size (segments, S, S) masks.
            class_labels = labels[self.label_names.index("class_labels")]
            labels = pad_sequence(list(class_labels), batch_first=True, padding_value=-100)
        return loss, logits, labels
