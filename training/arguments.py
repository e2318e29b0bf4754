"""Arguments of `possam train` / `possam evaluate`: a config file (JSON or YAML) plus command-line overrides."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from transformers import HfArgumentParser


@dataclass
class ModelArguments:
    """Which PosSAM to train or evaluate."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A PosSAM checkpoint (local folder or Hub id) to fine-tune or evaluate."}
    )
    preset: str = field(
        default="tiny",
        metadata={"help": "Without model_name_or_path: build this preset (tiny, base, large, huge) from scratch."},
    )
    sam_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Pretrained SAM for a new model: transformers SAM folder / Hub id, or original .pth."},
    )
    clip_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Pretrained CLIP for a new model: transformers CLIPModel folder / Hub id, or OpenCLIP file."},
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": 'JSON object of PosSamConfig fields to change, e.g. \'{"ldp_fusion": "sum"}\'.'}
    )


@dataclass
class DataArguments:
    """COCO-panoptic-format data (an image folder, a panoptic PNG folder, a JSON file), or a `datasets` dataset with
    `image`, `annotation` (`Image()`) and `segments_info` columns (`--dataset_name`)."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A panoptic dataset for datasets.load_dataset (Hub name, local parquet/imagefolder dataset) "
                  "or a save_to_disk folder, with image, annotation and segments_info columns. Replaces the "
                  "--train_*/--eval_* COCO folders."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    train_split: str = field(default="train", metadata={"help": "Training split of --dataset_name."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Evaluation split of --dataset_name (e.g. validation); none: no evaluation."}
    )

    train_annotations: str | None = field(default=None, metadata={"help": "Panoptic JSON of the training split."})
    train_images: str | None = field(default=None, metadata={"help": "Image folder of the training split."})
    train_panoptic: str | None = field(
        default=None, metadata={"help": "Panoptic PNG folder of the training split (default: the JSON path minus .json)."}
    )
    eval_annotations: str | None = field(default=None, metadata={"help": "Panoptic JSON of the evaluation split."})
    eval_images: str | None = field(default=None, metadata={"help": "Image folder of the evaluation split."})
    eval_panoptic: str | None = field(default=None, metadata={"help": "Panoptic PNG folder of the evaluation split."})
    synonyms: str | None = field(
        default=None,
        metadata={"help": "Vocabulary whose synonyms enrich the training classes, matched by dataset id: "
                  "coco_panoptic, ade20k_150, ade20k_847 or a vocabulary file."},
    )
    eval_synonyms: str | None = field(default=None, metadata={"help": "Same, for the evaluation classes."})
    min_scale: float = field(default=0.1, metadata={"help": "Large-scale jitter: smallest resize scale."})
    max_scale: float = field(default=2.0, metadata={"help": "Large-scale jitter: largest resize scale."})
    cache_features: bool = field(
        default=False,
        metadata={"help": "Compute the frozen SAM/CLIP features once per image and train on them (no augmentation)."},
    )
    feature_cache_dir: str | None = field(
        default=None, metadata={"help": "Where cached features live (default: <output_dir>/feature_cache)."}
    )
    eval_threshold: float = field(default=0.0, metadata={"help": "Panoptic score threshold used in evaluation."})
    seen_classes: str | None = field(
        default=None,
        metadata={"help": "Classes seen in training, for PQ/SQ/RQ over seen and unseen classes (pq_seen, pq_unseen, "
                  "...): a shipped vocabulary name (coco_panoptic, ...), a vocabulary file, or comma-separated class "
                  "names. possam train defaults to the training classes."},
    )
    ensemble_mode: str | None = field(
        default=None,
        metadata={"help": "Class ensemble in evaluation: mase, geometric, ldp_only or clip_only (default: the model's "
                  "config.ensemble_mode). Comma-separated modes (possam evaluate) evaluate each on the same forward "
                  "passes, their metrics prefixed with the mode."},
    )
    validate_dataset: bool = field(
        default=True,
        metadata={"help": "Decode every sample once before training/evaluation and report all invalid ones "
                  "(cached per dataset)."},
    )
    skip_invalid: bool = field(
        default=False, metadata={"help": "Leave invalid samples out (logged, with their count) instead of failing."}
    )
    validation_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where dataset validation results are cached (default $POSSAM_CACHE/dataset_validation, ~/.cache/possam/...; "
                  "empty: no cache)."},
    )


def evaluation_data_name(data_args: DataArguments) -> str | None:
    """What the evaluation split is called in results and model cards: the dataset and split, or the annotation file."""
    if data_args.eval_annotations:
        return os.path.basename(data_args.eval_annotations)
    if data_args.dataset_name and data_args.eval_split:
        return f"{data_args.dataset_name.rstrip('/').split('/')[-1]} ({data_args.eval_split})"
    return None


def read_config_file(path: str) -> dict:
    """A JSON or YAML file of argument values."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path!r} does not exist.")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if path.endswith((".yaml", ".yml")):
        import yaml

        values = yaml.safe_load(text)
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"Config file {path!r} is not valid JSON: {error}.") from None
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path!r} must hold a mapping of argument names to values.")
    return values


def parse_arguments(argv: list[str], dataclass_types: tuple, prog: str) -> tuple:
    """Parses `argv` into the dataclasses; `--config FILE` supplies defaults that other flags override."""
    parser = HfArgumentParser(dataclass_types, prog=prog)
    parser.add_argument("--config", default=None, help="JSON or YAML file of arguments; command-line flags override it.")
    known = {action.dest for action in parser._actions}
    config_path = None
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 >= len(argv):
            parser.error("--config needs a file path.")
        config_path = argv[position + 1]
        values = read_config_file(config_path)
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"unknown keys in {config_path}: {unknown}")
        parser.set_defaults(**values)
    # Returns the dataclasses, then a namespace holding --config, then the unparsed strings.
    parsed = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if parsed[-1]:
        parser.error(f"unrecognized arguments: {' '.join(parsed[-1])}")
    return tuple(parsed[: len(dataclass_types)])
