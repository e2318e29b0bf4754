"""Loading a saved PosSAM strictly, with one-line errors that name the file and say what is wrong.

`PosSamPreTrainedModel.from_pretrained` runs through `load_pretrained`, so every way of loading a checkpoint (the
class itself, `AutoModel`, the pipeline, `possam predict` / `train` / `evaluate`) fails the same way:

- a local path that does not exist, or is not a folder, is reported at once (never retried as a Hub id);
- a folder without `config.json`, with a config of another architecture or with invalid config values, without a
  weights file, or whose weights file cannot be read (truncated, not a checkpoint, refused by `weights_only`), fails
  naming that file;
- weights missing from the checkpoint, left over in it, or of the wrong shape fail with their count and the first few
  names, unless the caller asks for it (`strict=False`; `ignore_mismatched_sizes=True` for shapes only).

Every error is a `ModelLoadError` (a `ValueError`) whose message is one line.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import HfHubHTTPError, StrictDataclassError
from safetensors import SafetensorError, safe_open

from .checkpoint_io import looks_like_local_path
from .configuration import PosSamConfig


# Weight files transformers reads from a checkpoint folder, in its order of preference.
SAFE_WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# How many names an error lists before giving only the count.
LISTED_NAMES = 5

# What reading a damaged or foreign weights file raises inside transformers.
_READ_ERRORS = (OSError, ValueError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError, SafetensorError)


class ModelLoadError(ValueError):
    """A PosSAM checkpoint that cannot be loaded; the message is one line naming the folder or file."""


def load_pretrained(load, name_or_path, strict: bool = True, **kwargs):
    """Runs transformers' `from_pretrained` (`load(name_or_path, **kwargs)`) with the checks described above.

    Args:
        load: the parent class's `from_pretrained`, bound to the model class.
        name_or_path: a local checkpoint folder or a Hub id.
        strict: fail when weights are missing, unexpected or mis-shaped. `False` keeps transformers' behaviour
            (missing weights freshly initialized, a load report logged).
        kwargs: `from_pretrained` arguments.
    """
    folder = local_checkpoint_folder(name_or_path)
    if folder is not None:
        check_checkpoint_folder(
            folder / kwargs.get("subfolder", ""),
            check_config=kwargs.get("config") is None,  # a config given by the caller replaces config.json
            check_weights=_uses_default_weight_files(kwargs),
        )
    else:
        check_hub_reachable(os.fspath(name_or_path), kwargs)
    want_info = kwargs.pop("output_loading_info", False)
    allow_mismatched = kwargs.pop("ignore_mismatched_sizes", False) or not strict
    source = os.fspath(name_or_path)
    try:
        with _without_load_report(strict):
            model, info = load(name_or_path, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    except StrictDataclassError as error:  # a config value that PosSamConfig's validators refuse
        reason = _one_line(error.__cause__ or error)
        raise ModelLoadError(f"{_config_file(folder, source)}: invalid config: {reason}") from error
    except _READ_ERRORS as error:
        if isinstance(error, ModelLoadError):
            raise
        if folder is None:
            raise ModelLoadError(
                f"{source}: not a local folder, and loading it as a Hub id failed: {_one_line(error)}"
            ) from error
        raise ModelLoadError(f"{_weights_file(folder, source)}: cannot be loaded: {_one_line(error)}") from error
    if strict:
        check_weights_fit(info, _weights_file(folder, source), allow_mismatched)
    return (model, info) if want_info else model


def local_checkpoint_folder(name_or_path) -> Path | None:
    """The local folder `name_or_path` names, or `None` for a Hub id.

    A path that exists must be a folder. A path that does not exist is reported as missing when it can only be local
    (absolute, `./`, `~`, more than one `/`) or when its first component is a local folder (`possam-demo/modell`):
    a Hub id would otherwise be looked up on the network, which fails slowly and says nothing about the typo.
    """
    text = os.fspath(name_or_path)
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{text}: is a file, not a model folder; give the folder written by save_pretrained.")
    first = Path(text).parts[0] if Path(text).parts else text
    if looks_like_local_path(text) or (len(Path(text).parts) > 1 and Path(first).is_dir()):
        raise ModelLoadError(f"{text}: no such model folder{_suggestion(path)}.")
    return None


def check_hub_reachable(repo_id: str, kwargs: dict) -> None:
    """For a Hub id that is neither cached nor to be read offline: one quick request, so that an unreachable Hub is
    reported in seconds rather than after transformers' ~30 s of retries. Any answer from the Hub (found, not found,
    gated) lets transformers load as usual."""
    if kwargs.get("local_files_only") or huggingface_hub.constants.HF_HUB_OFFLINE:
        return
    if isinstance(huggingface_hub.try_to_load_from_cache(repo_id, "config.json", revision=kwargs.get("revision")), str):
        return  # cached: transformers can load it without the network
    try:
        huggingface_hub.model_info(repo_id, revision=kwargs.get("revision"), token=kwargs.get("token"), timeout=10)
    except HfHubHTTPError:
        return  # the Hub answered
    except Exception as error:  # no answer: DNS, connection or timeout failure of the HTTP client
        raise ModelLoadError(
            f"{repo_id}: no such local folder, and the Hugging Face Hub cannot be reached to load it as a Hub id "
            f"({_one_line(error)})."
        ) from None


def check_checkpoint_folder(folder: Path, check_config: bool = True, check_weights: bool = True) -> None:
    """Fails on a folder that cannot hold a PosSAM checkpoint: no or unreadable `config.json`, another architecture,
    invalid config values, no weights file, or a safetensors file whose header or length is damaged (read without
    loading any tensor)."""
    if check_config:
        _check_config_file(folder)
    if not check_weights:
        return
    present = [name for name in SAFE_WEIGHTS_FILES + PICKLE_WEIGHTS_FILES if (folder / name).is_file()]
    if not present:
        raise ModelLoadError(
            f"{folder}: no weights file in this folder (expected model.safetensors); it holds only "
            f"{sorted(entry.name for entry in folder.iterdir())}."
        )
    path = folder / present[0]  # transformers reads the first weights file present only
    if path.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ModelLoadError(f"{path}: not a readable weights index ({_one_line(error)}).") from None
        for shard in shards:
            check_weights_file(folder / shard)
    else:
        check_weights_file(path)


def _check_config_file(folder: Path) -> None:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(
            f"{folder}: no config.json in this folder; give a folder written by model.save_pretrained."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{config_path}: not a readable JSON config ({_one_line(error)}).") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "possam":
        raise ModelLoadError(
            f"{config_path}: describes a {model_type!r} model, not PosSAM (expected model_type 'possam')."
        )
    try:
        PosSamConfig.from_dict(config)
    except StrictDataclassError as error:  # a value that PosSamConfig's validators refuse
        raise ModelLoadError(f"{config_path}: invalid config: {_one_line(error.__cause__ or error)}") from None


def check_weights_file(path: Path) -> None:
    """Fails on a weights file that is missing or visibly damaged, without loading its tensors: a safetensors header
    that does not parse or does not cover the file, or a PyTorch zip archive that is truncated."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: weights file not found.")
    try:
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt"):
                pass
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        elif path.stat().st_size == 0:
            raise ValueError("the file is empty")
    except (OSError, ValueError, SafetensorError, zipfile.BadZipFile) as error:
        raise ModelLoadError(f"{path}: cannot be read, the file is truncated or not a checkpoint ({_one_line(error)}).") from None


def check_weights_fit(info: dict, weights: str, allow_mismatched: bool = False) -> None:
    """Fails when transformers' loading info lists missing, unexpected or (unless allowed) mis-shaped weights."""
    problems = []
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    if missing:
        problems.append(f"{len(missing)} weights missing ({_listing(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights ({_listing(unexpected)})")
    if not allow_mismatched and info["mismatched_keys"]:
        mismatched = [f"{key} {tuple(saved)} vs model {tuple(model)}" for key, saved, model in sorted(info["mismatched_keys"])]
        problems.append(f"{len(mismatched)} weights of the wrong shape ({_listing(mismatched)})")
    if problems:
        raise ModelLoadError(
            f"{weights}: does not fit the model of its config.json: {'; '.join(problems)}. Load with strict=False "
            "to initialize such weights freshly."
        )


def _uses_default_weight_files(kwargs: dict) -> bool:
    """Whether transformers will read the standard weight file names (not a variant, GGUF file or given state dict)."""
    return not any(kwargs.get(name) for name in ("variant", "gguf_file", "state_dict"))


def _weights_file(folder: Path | None, source: str) -> str:
    if folder is None:
        return source
    for name in SAFE_WEIGHTS_FILES + PICKLE_WEIGHTS_FILES:
        if (folder / name).is_file():
            return str(folder / name)
    return str(folder)


def _config_file(folder: Path | None, source: str) -> str:
    return str(folder / "config.json") if folder is not None else source


def _suggestion(path: Path) -> str:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        siblings = [entry.name for entry in parent.iterdir() if entry.is_dir()]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, siblings, n=1)
    return f" (did you mean {str(parent / close[0])!r}?)" if close else ""


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED_NAMES])
    return shown + (f", ... {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else "")


def _one_line(error: BaseException, limit: int = 400) -> str:
    """An exception as one line: its non-empty lines joined (transformers' and huggingface_hub's span several), the
    reason torch's `weights_only` unpickler gives when it refuses a file, at most `limit` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, pickle.UnpicklingError):
        reasons = [line for line in lines if "WeightsUnpickler error" in line]
        lines = ["a pickle holding more than tensors, refused by torch.load(weights_only=True)", *reasons]
    text = " ".join(lines) if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _without_load_report:
    """Drops transformers' multi-line load report while a strict load runs: a strict load that would report something
    raises a `ModelLoadError` saying the same in one line instead."""

    def __init__(self, active: bool):
        self.active = active
        self.logger = logging.getLogger("transformers.modeling_utils")

    @staticmethod
    def filter(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)

    def __enter__(self):
        if self.active:
            self.logger.addFilter(self.filter)

    def __exit__(self, *exc):
        self.logger.removeFilter(self.filter)
        return False
