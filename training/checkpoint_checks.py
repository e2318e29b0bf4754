"""Checking a Trainer checkpoint before resuming from it, so that a damaged file fails in one line naming it.

The Trainer reads `trainer_state.json`, the model weights, `optimizer.pt`, `scheduler.pt` and the RNG states deep
inside `train()`; a truncated or corrupt file there surfaces as a `JSONDecodeError` without a file name or a torch
unpickling traceback. `check_resume_checkpoint` reads each file's structure first (JSON parse, safetensors header,
the zip archive and its checksums of torch files) without unpickling anything.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from ..loading import ModelLoadError, check_weights_file


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
