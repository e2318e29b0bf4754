"""Checking a whole panoptic dataset before the first training step.

Every sample is decoded once, in parallel, exactly as training and evaluation decode it (`decode_panoptic_example`):
missing, truncated or corrupt images and panoptic PNGs, image/PNG size mismatches and segment ids that the PNG and
`segments_info` disagree on are found up front and reported together, each naming its file, instead of surfacing as
a traceback mid-training. With `skip_invalid` the bad samples are dropped (and counted) instead.

The result is cached per dataset (a fingerprint of its rows and of its files' sizes and modification times), so a
second run on an unchanged dataset does not decode it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from transformers.utils import logging

from ..log import get_logger
from .coco_panoptic import PanopticDataError, decode_panoptic_example


logger = get_logger(__name__)

VALIDATION_CACHE_VERSION = 1


def default_validation_cache_dir() -> str:
    """`$POSSAM_CACHE/dataset_validation`, `~/.cache/possam/dataset_validation` by default."""
    cache_home = os.environ.get("POSSAM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "possam"))
    return os.path.join(cache_home, "dataset_validation")


@dataclass
class ValidationReport:
    """What validation found: `problems` maps a sample index to the reason it cannot be used."""

    source: str
    num_samples: int
    problems: dict[int, str] = field(default_factory=dict)

    @property
    def num_invalid(self) -> int:
        return len(self.problems)

    def describe(self) -> str:
        lines = [f"{self.num_invalid} of {self.num_samples} samples of {self.source} are invalid:"]
        lines += [f"  sample {index}: {message}" for index, message in sorted(self.problems.items())]
        return "\n".join(lines)


def dataset_fingerprint(dataset, extra: str = "") -> str:
    """Identifies a dataset's content: for COCO-folder rows their JSON fields plus each file's size and modification
    time; for Hub-style rows `datasets`' own fingerprint (images are stored in the dataset itself)."""
    digest = hashlib.sha1(f"v{VALIDATION_CACHE_VERSION}:{extra}:{len(dataset)}".encode())
    if "image_path" in dataset.column_names:
        columns = dataset.select_columns(["image_path", "panoptic_path", "width", "height", "segments_info"]).to_dict()
        digest.update(json.dumps(columns, sort_keys=True).encode())
        for path in (*columns["image_path"], *columns["panoptic_path"]):
            try:
                status = os.stat(path)
                digest.update(f"{path}:{status.st_size}:{status.st_mtime_ns}".encode())
            except OSError:
                digest.update(f"{path}:missing".encode())
    else:
        digest.update(dataset._fingerprint.encode())
    return digest.hexdigest()


def _problem(dataset, index: int) -> str | None:
    try:
        decode_panoptic_example(dataset[index])
    except PanopticDataError as error:
        return str(error)
    return None


def validate_panoptic_dataset(
    dataset, source: str, num_workers: int | None = None, cache_dir: str | None = None, show_progress: bool = True
) -> ValidationReport:
    """Decodes every sample of a `load_coco_panoptic` / `load_hub_panoptic` dataset and reports the invalid ones.

    Args:
        dataset: the dataset to check.
        source: how errors name the dataset (its JSON path or Hub name and split).
        num_workers: decoding threads (default: the CPU count, at most 16).
        cache_dir: where results are cached by dataset fingerprint (default: `default_validation_cache_dir()`);
            an empty string disables the cache.
        show_progress: show a progress bar (also subject to `transformers.utils.logging.disable_progress_bar`).
    """
    if len(dataset) == 0:
        raise PanopticDataError(f"{source} is empty: it has no samples to train or evaluate on.")
    cache_dir = default_validation_cache_dir() if cache_dir is None else cache_dir
    cache_path = None
    if cache_dir:
        cache_path = os.path.join(cache_dir, f"{dataset_fingerprint(dataset, source)}.json")
        if os.path.isfile(cache_path):
            with open(cache_path, encoding="utf-8") as handle:
                cached = json.load(handle)
            logger.info(f"Dataset validation of {source}: reusing the cached result {cache_path}.")
            return ValidationReport(source, len(dataset), {int(index): message for index, message in cached.items()})
    workers = num_workers or min(16, os.cpu_count() or 1)
    problems: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda index: (index, _problem(dataset, index)), range(len(dataset)))
        progress = logging.tqdm(results, total=len(dataset), desc=f"Validating {source}", disable=not show_progress)
        for index, message in progress:
            if message is not None:
                problems[index] = message
    if cache_path:
        os.makedirs(cache_dir, exist_ok=True)
        temporary = f"{cache_path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(problems, handle)
        os.replace(temporary, cache_path)
    return ValidationReport(source, len(dataset), problems)


def checked_dataset(dataset, source: str, skip_invalid: bool = False, **validation_kwargs):
    """Validates `dataset` (see `validate_panoptic_dataset`); returns it, or without its invalid samples when
    `skip_invalid`. Raises `PanopticDataError` listing every problem otherwise, or when nothing valid is left."""
    report = validate_panoptic_dataset(dataset, source, **validation_kwargs)
    if not report.problems:
        return dataset
    if not skip_invalid:
        raise PanopticDataError(f"{report.describe()}\nFix them, or pass --skip_invalid to leave them out.")
    for index, message in sorted(report.problems.items()):
        logger.warning(f"Skipping sample {index} of {source}: {message}")
    if report.num_invalid == report.num_samples:
        raise PanopticDataError(f"{source}: all {report.num_samples} samples are invalid, none is left.\n{report.describe()}")
    logger.warning(f"Skipped {report.num_invalid} invalid of {report.num_samples} samples of {source} (--skip_invalid).")
    valid = [index for index in range(len(dataset)) if index not in report.problems]
    return dataset.select(valid)
