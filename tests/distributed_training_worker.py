"""Launched by test_training_distributed.py under torchrun: trains the tiny PosSAM for two steps with PosSamTrainer
and writes, per rank, its final trainable weights, its losses and the dataset indices it trained on.

Mask and Dice weights are zero so that the loss involves no random point sampling: runs with different process
counts then compute the same function, and their results can be compared exactly rather than statistically. The
mask-loss normalizer is recorded separately: it must be the mask count averaged over processes.
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
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, ddp_backend="gloo", disable_tqdm=True,
        seed=0, dataloader_num_workers=0,
    )
    trainer = PosSamTrainer(
        model=model, args=args, train_dataset=recorded, data_collator=PosSamDataCollator(processor.encode_vocabulary(vocabulary)),
    )
    trainer.train()
    rank = args.process_index
    weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    torch.save(weights, os.path.join(output_dir, f"weights_rank{rank}.pt"))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    local_masks = recorded.dataset[recorded.seen[0]]["class_labels"]
    num_masks = model.criterion.get_num_masks([local_masks], device=torch.device("cpu")).item()
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(
            {"rank": rank, "world_size": args.world_size, "seen": recorded.seen, "losses": losses,
             "local_masks": len(local_masks), "num_masks": num_masks},
            handle,
        )
    leave_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
