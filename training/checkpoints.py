"""Finding the checkpoint to resume from: the newest *complete* `checkpoint-N` folder of a run.

transformers' `get_last_checkpoint` returns the highest-numbered `checkpoint-N` folder even when the run was killed
while writing it, and resuming from it then fails deep inside loading. A checkpoint is complete when it holds the
model weights, the optimizer state and `trainer_state.json` (written last by the Trainer).
"""

from __future__ import annotations

import glob
import os
import re

from transformers.utils import logging


logger = logging.get_logger(__name__)

_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# Each part of a resumable checkpoint, and the file names (or glob patterns) any one of which provides it: single
# process / DDP, sharded safetensors, FSDP (`*_fsdp_0`, `optimizer_0`) and DeepSpeed (`global_step*`) layouts.
CHECKPOINT_PARTS = {
    "model weights": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json", "pytorch_model_fsdp*", "global_step*"),
    "optimizer state": ("optimizer.pt", "optimizer.bin", "optimizer_0", "global_step*"),
    "trainer state": ("trainer_state.json",),
}


def missing_checkpoint_parts(checkpoint: str) -> list[str]:
    """The parts of `CHECKPOINT_PARTS` that `checkpoint` lacks (empty for a complete checkpoint)."""
    return [
        part
        for part, patterns in CHECKPOINT_PARTS.items()
        if not any(glob.glob(os.path.join(glob.escape(checkpoint), pattern)) for pattern in patterns)
    ]


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The highest-numbered complete `checkpoint-N` folder of `output_dir`, or `None`; newer partial ones are skipped
    with a warning naming what they lack."""
    if not os.path.isdir(output_dir):
        return None
    numbered = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_NAME.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            numbered.append((int(match.group(1)), os.path.join(output_dir, name)))
    for _, checkpoint in sorted(numbered, reverse=True):
        missing = missing_checkpoint_parts(checkpoint)
        if not missing:
            return checkpoint
        logger.warning(f"Skipping the partial checkpoint {checkpoint} (it lacks the {', '.join(missing)}).")
    return None


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint` as the Trainer takes it: `"last"` becomes the newest complete checkpoint of
    `output_dir` (an error when there is none); a path or `None` is returned as given."""
    if resume_from_checkpoint != "last":
        return resume_from_checkpoint
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint is None:
        raise ValueError(
            f"--resume_from_checkpoint last: {output_dir!r} holds no complete checkpoint-N folder (with model weights, "
            "optimizer state and trainer_state.json) to resume from."
        )
    logger.info(f"Resuming from {checkpoint}, the newest complete checkpoint of {output_dir}.")
    return checkpoint
