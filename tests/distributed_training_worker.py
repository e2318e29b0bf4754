"""Launched by test_training_distributed.py under torchrun: trains the tiny PosSAM for two steps with PosSamTrainer
and writes, per rank, its final trainable weights, its losses and the dataset indices it trained on.

Runs with different process counts must compute the same function for their results to be compared exactly rather
than statistically, so the setup removes every source of divergence other than floating-point summation order:
- Mask and Dice weights are zero: those losses and matching costs use random points, drawn per image from one random
  stream, so a batch of 2 and two processes with a batch of 1 would draw different points.
- The test's images hold at most one thing instance: with class-only matching costs, two segments of the same class
  have identical cost columns, and which query gets which segment is then decided by rounding differences between a
  batch of 2 and a batch of 1 (the IoU targets then differ: this made the comparison fail on `fpn.rescale`).
- Plain SGD without gradient clipping: Adam's first updates are `lr * sign(g)`, so gradient entries that are zero up
  to rounding move by +-lr depending on the summation order, and clipping would hide a wrong gradient scale.
The mask-loss normalizer is recorded separately: it must be the mask count averaged over processes.
"""

import json
import os
import sys

import torch
from torch.utils.data import Dataset

sys.path.insert(0, os.path.dirname(__file__))
from conftest import tiny_model, tiny_processor  # noqa: E402

from possam import PosSamModel  # noqa: E402
from possam.training import (  # noqa: E402
    PanopticTrainingDataset,
    PosSamDataCollator,
    PosSamTrainer,
    PosSamTrainingArguments,
    load_coco_panoptic,
)
from possam.training.run import leave_process_group  # noqa: E402


class RecordingDataset(Dataset):
    def __init__(self, dataset):
        self.dataset, self.seen = dataset, []

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.seen.append(int(index))
        return self.dataset[index]

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)


def main(json_path, image_dir, vocabulary_path, output_dir, per_device_batch_size, checkpoint=None):
    """With `checkpoint` (a saved PosSAM folder) the model is loaded from it and DDP runs with
    `find_unused_parameters=False`, which fails if a frozen tower parameter were trainable (it never gets a gradient)."""
    processor = tiny_processor()
    dataset, vocabulary = load_coco_panoptic(json_path, image_dir, synonyms_from=vocabulary_path)
    recorded = RecordingDataset(PanopticTrainingDataset(dataset, processor.image_processor, seed=0))
    model = PosSamModel.from_pretrained(checkpoint) if checkpoint else tiny_model(mask_weight=0.0, dice_weight=0.0)
    args = PosSamTrainingArguments(
        ddp_find_unused_parameters=False if checkpoint else None,
        output_dir=output_dir, max_steps=2, per_device_train_batch_size=int(per_device_batch_size), learning_rate=1e-3,
        optim="sgd", max_grad_norm=0.0,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, ddp_backend="gloo", disable_tqdm=True,
        seed=0, dataloader_num_workers=0,
    )
    trainer = PosSamTrainer(
        model=model, args=args, train_dataset=recorded, data_collator=PosSamDataCollator(processor.encode_vocabulary(vocabulary)),
    )
    trainer.train()
    rank = args.process_index
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    # The full weights (FSDP holds a shard per process and gathers them on process 0 only); what the optimizer holds
    # on this process.
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    weights = {name: state[name].detach().clone() for name in trainable if name in state}
    optimized = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    torch.save(weights, os.path.join(output_dir, f"weights_rank{rank}.pt"))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    local_masks = recorded.dataset[recorded.seen[0]]["class_labels"]
    num_masks = model.criterion.get_num_masks([local_masks], device=torch.device("cpu")).item()
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(
            {"rank": rank, "world_size": args.world_size, "seen": recorded.seen, "losses": losses,
             "local_masks": len(local_masks), "num_masks": num_masks,
             "optimizer_numel": sum(p.numel() for p in optimized), "optimizer_all_trainable": all(p.requires_grad for p in optimized),
             "trainable_numel": sum(p.numel() for p in model.parameters() if p.requires_grad)},
            handle,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
    # After `main` returned, the trainer and its DDP wrapper (which holds the process group) are gone.
    leave_process_group()
