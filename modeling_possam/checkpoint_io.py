"""Reading foreign checkpoints and renaming their keys, with errors that say exactly what does not fit.

The converters (`convert_sam`, `convert_openclip`, `backbones`) describe a checkpoint layout as a list of `KeyRule`s:
a source key pattern, the target key(s) it becomes and an optional tensor transform (split a packed projection,
transpose a matrix). `convert_state_dict` applies them and compares the result with the state dict the target module
expects, so a wrong or truncated checkpoint fails with the missing, unexpected and mis-shaped keys listed, in the
checkpoint's own key names where possible.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from safetensors.torch import load_file
from torch import nn


# Suffixes that name a checkpoint *file*; anything else is a folder or a Hub id for `from_pretrained`.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")

# How many keys of each kind an error message lists before summarizing the rest.
_LISTED_KEYS = 12


class CheckpointError(ValueError):
    """A checkpoint file or state dict that cannot be converted: unreadable, or keys/shapes that do not fit."""


def is_checkpoint_file(source: str | os.PathLike) -> bool:
    """Whether `source` names a checkpoint file (existing, or with a checkpoint suffix) rather than a folder/Hub id."""
    path = os.fspath(source)
    return os.path.isfile(path) or (not os.path.isdir(path) and path.lower().endswith(CHECKPOINT_SUFFIXES))


def looks_like_local_path(source: str | os.PathLike) -> bool:
    """Whether `source` can only be a local path: absolute, relative to `.`/`..`/`~`, or with more than one `/` (a Hub
    id is `name` or `namespace/name`). Such a source that does not exist is reported as missing, not looked up."""
    path = os.fspath(source)
    return (
        os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or (os.sep != "/" and os.sep in path)
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Loads a state dict from a `.safetensors` file or a PyTorch pickle (`.pth`/`.pt`/`.bin`/`.ckpt`).

    PyTorch files are read with `weights_only=True` (no arbitrary code runs). Training checkpoints that wrap the weights
    (`{"state_dict": ...}` or `{"model": ...}`) are unwrapped, and a `module.` prefix left by DataParallel is removed.

    Raises:
        FileNotFoundError: `path` does not exist.
        CheckpointError: the file cannot be read, or holds no tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file.")
    try:
        if path.lower().endswith(".safetensors"):
            loaded = load_file(path, device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to deserialize means the file is not a usable checkpoint
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({reason}).") from error

    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors), got {type(loaded).__name__}."
        )
    not_tensors = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors or not loaded:
        raise CheckpointError(
            f"{path}: expected a state dict of tensors, but "
            + (f"{_listing(not_tensors)} are not tensors." if not_tensors else "it is empty.")
        )
    state_dict = dict(loaded)
    if all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    return state_dict


@dataclass(frozen=True)
class KeyRule:
    """One source key pattern and the target key(s) it becomes.

    Patterns are full key names with placeholders: `{tail}` matches any rest of the key (dots included), any other
    `{name}` matches one dot-free component (a layer index, `weight`/`bias`). Every target uses the same placeholders.
    `transform` maps the source tensor to one tensor per target (default: the tensor itself, one target).
    """

    source: str
    targets: tuple[str, ...]
    transform: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None

    def match_source(self, key: str) -> dict[str, str] | None:
        found = _compile(self.source).fullmatch(key)
        return None if found is None else found.groupdict()

    def match_target(self, key: str) -> dict[str, str] | None:
        for target in self.targets:
            found = _compile(target).fullmatch(key)
            if found is not None:
                return found.groupdict()
        return None


def rule(
    source: str, *targets: str, transform: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None
) -> KeyRule:
    """Shorthand for `KeyRule(source, targets, transform)`; one target equal to `source` when none is given."""
    return KeyRule(source, targets or (source,), transform)


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    rules: Iterable[KeyRule],
    expected: Mapping[str, torch.Size],
    source_name: str,
    target_name: str,
    ignore: Callable[[str], bool] = lambda key: False,
) -> dict[str, torch.Tensor]:
    """Renames (and transforms) `state_dict` with `rules` and checks it against the `expected` target shapes.

    Args:
        state_dict: the source tensors.
        rules: the layout; the first rule whose source pattern matches a key applies.
        expected: target key -> shape, typically `{k: v.shape for k, v in meta_module.state_dict().items()}`.
        source_name: names the checkpoint in errors (a path or Hub id).
        target_name: names the module being filled in errors.
        ignore: keys of the source that are deliberately not converted (parts of the original model PosSAM does not
            use, such as SAM's prompt encoder).

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped key.
    """
    rules = list(rules)
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    for key, tensor in state_dict.items():
        if ignore(key):
            continue
        for candidate in rules:
            fields = candidate.match_source(key)
            if fields is not None:
                break
        else:
            unexpected.append(key)
            continue
        tensors = candidate.transform(tensor) if candidate.transform is not None else (tensor,)
        for target, value in zip(candidate.targets, tensors):
            target_key = target.format(**fields)
            if target_key not in expected:
                unexpected.append(key)
                break
            converted[target_key], origin[target_key] = value, key

    missing = []
    for target_key in expected:
        if target_key not in converted:
            source_key = _source_key_for(target_key, rules)
            if source_key not in missing:
                missing.append(source_key)
    mismatched = [
        f"{origin[key]} {tuple(value.shape)} -> {key} {tuple(expected[key])}"
        for key, value in converted.items()
        if tuple(value.shape) != tuple(expected[key])
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(_mismatch_report(source_name, target_name, missing, sorted(set(unexpected)), mismatched))
    return converted


def load_checked(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source_name: str, target_name: str) -> None:
    """`module.load_state_dict(state_dict, strict=True)`, failing with a `CheckpointError` listing what does not fit."""
    expected = {key: value.shape for key, value in module.state_dict().items()}
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key} {tuple(value.shape)} -> {tuple(expected[key])}"
        for key, value in state_dict.items()
        if key in expected and tuple(value.shape) != tuple(expected[key])
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(_mismatch_report(source_name, target_name, missing, unexpected, mismatched))
    module.load_state_dict(state_dict, strict=True)


def check_loading_info(info: Mapping, source_name: str, target_name: str, prefix: str = "") -> None:
    """Raises a `CheckpointError` if transformers' `from_pretrained(..., output_loading_info=True)` left keys under
    `prefix` missing or mis-shaped (load with `ignore_mismatched_sizes=True` so mismatches are reported, not raised)."""
    missing = sorted(key for key in info["missing_keys"] if key.startswith(prefix))
    mismatched = [
        f"{key} {tuple(checkpoint_shape)} -> {tuple(model_shape)}"
        for key, checkpoint_shape, model_shape in sorted(info["mismatched_keys"])
        if key.startswith(prefix)
    ]
    if missing or mismatched:
        raise CheckpointError(_mismatch_report(source_name, target_name, missing, [], mismatched))


def expected_shapes(module: nn.Module) -> dict[str, torch.Size]:
    """Target key -> shape of a module's state dict (build the module on the `meta` device: no memory is used)."""
    return {key: value.shape for key, value in module.state_dict().items()}


def _source_key_for(target_key: str, rules: list[KeyRule]) -> str:
    """The checkpoint key a missing target key would have come from (the target key itself if no rule produces it)."""
    for candidate in rules:
        fields = candidate.match_target(target_key)
        if fields is not None:
            return candidate.source.format(**fields)
    return target_key


def _mismatch_report(source_name: str, target_name: str, missing, unexpected, mismatched) -> str:
    lines = [f"{source_name} does not fit {target_name}:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        lines.append(f"  shape mismatches, checkpoint -> model ({len(mismatched)}): {_listing(mismatched)}")
    return "\n".join(lines)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED_KEYS])
    return shown + (f", ... and {len(keys) - _LISTED_KEYS} more" if len(keys) > _LISTED_KEYS else "")


_PATTERNS: dict[str, re.Pattern] = {}


def _compile(pattern: str) -> re.Pattern:
    if pattern not in _PATTERNS:
        parts = re.split(r"\{(\w+)\}", pattern)
        regex = "".join(
            re.escape(part) if index % 2 == 0 else f"(?P<{part}>{'.+' if part == 'tail' else '[^.]+'})"
            for index, part in enumerate(parts)
        )
        _PATTERNS[pattern] = re.compile(regex)
    return _PATTERNS[pattern]
