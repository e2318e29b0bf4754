"""Checking a Trainer checkpoint before resuming from it, so that a damaged file fails in one line naming it.

The Trainer reads `trainer_state.json`, the model weights, `optimizer.pt`, `scheduler.pt` and the RNG states deep
inside `train()`; a truncated or corrupt file there surfaces as a `JSONDecodeError` without a file name or a torch
unpickling traceback. `check_resume_checkpoint` reads each file's structure first (JSON parse, safetensors header,
the zip archive and its checksums of torch files) without unpickling anything.

`--resume_from_checkpoint last` picks the newest *complete* `checkpoint-N` folder of a run (`last_complete_checkpoint`):
transformers' `get_last_checkpoint` returns the highest-numbered folder even when the run was killed while writing it.
A checkpoint is complete when it holds the model weights, the optimizer state and `trainer_state.json`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import zipfile
from pathlib import Path

from transformers.utils import logging

from ..loading import ModelLoadError, check_weights_file


logger = logging.get_logger(__name__)


class CheckpointFileError(ValueError):
    """A file of a training checkpoint that cannot be read; the message names it."""


# Files a checkpoint may hold that torch writes as zip archives.
_TORCH_FILE_PATTERNS = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")


def check_resume_checkpoint(folder: str | os.PathLike) -> None:
    """Fails with a `CheckpointFileError` naming the first unreadable file of the checkpoint `folder`.

    Checked: the folder exists; `trainer_state.json` is JSON; `model.safetensors` (when present) has an intact header
    covering the file; every torch file (`optimizer.pt`, `scheduler.pt`, `scaler.pt`, `rng_state*.pth`) is a complete
    zip archive whose checksums match.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointFileError(f"{folder}: no such checkpoint folder.")
    state = folder / "trainer_state.json"
    if not state.is_file():
        raise CheckpointFileError(f"{folder}: no trainer_state.json; give a checkpoint-N folder written by training.")
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointFileError(f"{state}: not readable JSON ({error}); the checkpoint is damaged.") from None
    weights = folder / "model.safetensors"
    if weights.exists():
        try:
            check_weights_file(weights)
        except ModelLoadError as error:
            raise CheckpointFileError(str(error)) from None
    for pattern in _TORCH_FILE_PATTERNS:
        for path in sorted(folder.glob(pattern)):
            _check_torch_file(path)


def _check_torch_file(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointFileError(f"{path}: cannot be read, the file is truncated or not a torch file ({error}).") from None
    if damaged is not None:
        raise CheckpointFileError(f"{path}: damaged (checksum mismatch in {damaged}).")


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
        raise CheckpointFileError(
            f"--resume_from_checkpoint last: {output_dir!r} holds no complete checkpoint-N folder (with model weights, "
            "optimizer state and trainer_state.json) to resume from."
        )
    logger.info(f"Resuming from {checkpoint}, the newest complete checkpoint of {output_dir}.")
    return checkpoint
