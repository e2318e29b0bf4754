"""Model cards of PosSAM folders: `README.md` with the Hub's YAML metadata, rendered from what the folder records.

Every `save_pretrained` of a `PosSamConfig`, hence of every model, writes one (so do `possam demo`, `possam train`
and `possam convert build`, which save through it). What the card states comes from the folder, never from assumptions:

- towers: `config.sam_pretrained` / `config.clip_pretrained` (set by `from_pretrained_backbones`); a model built from
  a config has random towers and its card says so; `base_model` lists only Hub ids;
- training: `config.training_vocabulary` and `training_args.json` (written by `possam train`);
- results: `eval_results.json` (written by `possam train` after its evaluation, by `possam card --results`, or by
  `possam evaluate --output_json FOLDER/eval_results.json`) becomes the `model-index`.

    possam card runs/mydata                                           # re-render from the folder
    possam card runs/mydata --results ade.json --eval-dataset "ADE20K panoptic val"   # record an evaluation, re-render
    possam card --paper-cards model_cards                             # the PosSAM-B/L/H cards (paper's Table 1)

A README.md that this module did not write (no marker line) is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

import torch
import yaml

from .configuration import PosSamConfig, possam_preset


CARD_NAME = "README.md"
MARKER = "<!-- Model card written by the possam package; `possam card FOLDER` re-renders it. -->"
RESULTS_NAME = "eval_results.json"
RESULT_FILES = (RESULTS_NAME, "all_results.json")  # the first present is read
TRAINING_ARGS_NAME = "training_args.json"

PAPER = {"name": "Reported by the PosSAM paper (arXiv 2403.09620), Table 1", "url": "https://arxiv.org/abs/2403.09620"}
# (name in the card, key in evaluation results: lower case, without the `eval_` prefix)
METRICS = (("PQ", ("pq",)), ("SQ", ("sq",)), ("RQ", ("rq",)), ("mAP", ("map",)), ("mIoU", ("miou", "mean_iou")))
SAM_CHECKPOINTS = {"base": "facebook/sam-vit-base", "large": "facebook/sam-vit-large", "huge": "facebook/sam-vit-huge"}
OPENCLIP_CONVNEXT_L = "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup"
SAM_SIZE_BY_WIDTH = {768: "base", 1024: "large", 1280: "huge"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Table 1 of the paper: PQ, SQ, RQ, mAP, mIoU.
PAPER_RESULTS = {
    "base": {"COCO->ADE20K": (26.5, 74.7, 32.0, 16.8, 32.9), "ADE20K->COCO": (25.1, 80.1, 30.4, 18.7, 37.9)},
    "large": {"COCO->ADE20K": (28.0, 75.5, 33.4, 18.3, 34.2), "ADE20K->COCO": (30.7, 81.7, 35.9, 22.5, 41.2)},
    "huge": {"COCO->ADE20K": (29.2, 76.3, 34.7, 18.3, 35.1), "ADE20K->COCO": (31.6, 81.5, 37.5, 25.9, 39.9)},
}
PAPER_RECIPE = (
    "The paper's recipe (FC-CLIP's): COCO panoptic train2017 (133 classes) with large-scale jitter (flip, scale 0.1-2.0, "
    "1024 crop), AdamW (lr 1e-4, weight decay 0.05, none on norms and embeddings), gradient clipping 0.01, batch 16, "
    "368,750 iterations with x0.1 steps at 327,778 and 355,092, mixed precision; losses: class cross-entropy (void "
    "weight 0.1, weight 2), point-sampled BCE + Dice (5 + 5) and IoU MSE (1) on every decoder layer. The repository's "
    "`training/configs/coco_to_ade20k.json` holds it. The ADE20K -> COCO results come from the same pipeline trained on "
    "ADE20K panoptic (150 classes)."
)
SETTINGS = {
    "COCO->ADE20K": ("ade20k", "ADE20K panoptic val, zero-shot after training on COCO panoptic", "validation"),
    "ADE20K->COCO": ("coco", "COCO panoptic val2017, zero-shot after training on ADE20K panoptic", "validation"),
}


# ---------------------------------------------------------------------------------------------------- facts


def is_hub_id(source: str | None) -> bool:
    """A Hub model id (`owner/name`), not a local folder or checkpoint file."""
    return bool(source) and HUB_ID.match(source) is not None and not os.path.exists(source)


def sam_size(config: PosSamConfig) -> str:
    width = config.sam_vision_config.hidden_size
    return SAM_SIZE_BY_WIDTH.get(width, f"custom ({width}-wide)")


def tower_parameter_counts(model) -> dict[str, int]:
    """Frozen (SAM: image encoder and prompt decoder; CLIP towers) and trainable (everything else) parameter counts, by
    module rather than by `requires_grad` (which transformers' loader resets)."""
    total = sum(parameter.numel() for parameter in model.parameters())
    frozen_parts = (model.sam, model.sam_prompt_decoder, model.clip)
    frozen = sum(parameter.numel() for part in frozen_parts for parameter in part.parameters())
    return {"frozen": frozen, "trainable": total - frozen}


def config_parameter_counts(config: PosSamConfig) -> dict[str, int]:
    """`tower_parameter_counts` of a model with this config, built on the meta device (no memory, no init)."""
    from .modeling_possam import PosSamModel  # the renderer is imported by the model module itself

    with torch.device("meta"):
        return tower_parameter_counts(PosSamModel(config))


def clip_kind(config: PosSamConfig) -> str:
    vision = config.clip_config.vision_config
    if not config.clip_config.is_convnext:
        return f"ViT ({vision.hidden_size}-wide)"
    if list(vision.hidden_sizes) == [192, 384, 768, 1536] and list(vision.depths) == [3, 3, 27, 3]:
        return "ConvNeXt-Large"
    return f"ConvNeXt ({vision.hidden_sizes[-1]}-wide)"


def describe_towers(config: PosSamConfig) -> tuple[str, list[str]]:
    """What the card says about the towers' weights, and the `base_model` ids that are true."""
    clip = clip_kind(config)
    sources = {"SAM": config.sam_pretrained, "CLIP": config.clip_pretrained}
    if not any(sources.values()):
        return (
            f"**The SAM and CLIP towers of this model are randomly initialized**: it was not built on pretrained "
            f"checkpoints (SAM ViT-{sam_size(config)} and CLIP {clip} shapes only). It knows at most the classes it "
            "was trained on; other class names mean nothing to it.",
            [],
        )
    lines = []
    for tower, source in sources.items():
        if not source:
            lines.append(f"the {tower} tower is randomly initialized")
        elif is_hub_id(source):
            lines.append(f"the {tower} tower comes from [`{source}`](https://huggingface.co/{source})")
        else:
            lines.append(f"the {tower} tower was loaded from the checkpoint `{os.path.basename(os.path.normpath(source))}`")
    base_models = [source for source in sources.values() if is_hub_id(source)]
    return "Frozen towers: " + "; ".join(lines) + ".", base_models


def read_results(folder: str) -> dict | None:
    """The evaluation results recorded in a folder (`eval_results.json`, else `all_results.json`), if any."""
    for name in RESULT_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
    return None


def metric_values(measured: dict) -> dict[str, float]:
    """PQ/SQ/RQ/mAP/mIoU from an evaluation's metrics, whatever their case and `eval_` prefix; NaN ones dropped."""
    normalized = {key.lower().removeprefix("eval_"): value for key, value in measured.items()}
    values = {}
    for name, keys in METRICS:
        value = next((normalized[key] for key in keys if key in normalized), None)
        if isinstance(value, (int, float)) and not math.isnan(value):
            values[name] = float(value)
    return values


def model_index_entry(dataset_type: str, dataset_name: str, split: str, values: dict, source: dict | None) -> dict:
    result = {
        "task": {"type": "image-segmentation", "name": "Open-vocabulary panoptic segmentation"},
        "dataset": {"type": dataset_type, "name": dataset_name, "split": split},
        "metrics": [
            {"type": name.lower(), "value": round(values[name], 2), "name": name, "verified": False}
            for name, _ in METRICS
            if name in values
        ],
    }
    if source:
        result["source"] = dict(source)  # a copy: a shared dict would be dumped as a YAML anchor
    return result


def recorded_training(folder: str, config: PosSamConfig) -> str:
    """What the folder records about the model's training (`training_args.json` from `possam train`)."""
    if not config.training_vocabulary:
        return "This model has not been trained: its mask decoder, IoU head and LDP are freshly initialized."
    labels = [entry.split(",")[0] for entry in config.training_vocabulary]
    shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
    classes = f"{len(labels)} training classes ({shown})"
    path = os.path.join(folder, TRAINING_ARGS_NAME)
    if not os.path.isfile(path):
        return f"Trained on {classes}; the training arguments were not saved with this model."
    with open(path, encoding="utf-8") as handle:
        arguments = json.load(handle)
    milestones = arguments.get("lr_milestones")
    schedule = f"x{arguments.get('lr_decay_factor')} at steps {milestones}" if milestones else arguments.get("lr_scheduler_type")
    precision = "bf16" if arguments.get("bf16") else "fp16" if arguments.get("fp16") else "fp32"
    return (
        f"Trained with `possam train` on {classes}: {arguments.get('max_steps')} steps, batch "
        f"{arguments.get('per_device_train_batch_size')} per device, learning rate {arguments.get('learning_rate')} "
        f"({schedule}), weight decay {arguments.get('weight_decay')}, gradient clipping {arguments.get('max_grad_norm')}, "
        f"{precision}."
    )


# ---------------------------------------------------------------------------------------------------- rendering


def render(
    model_name: str,
    config: PosSamConfig,
    counts: dict[str, int],
    results: list[dict],
    description: str,
    towers: str,
    base_models: list[str],
    training: str,
    compute: str,
    datasets: list[str] | None = None,
) -> str:
    """The card: YAML metadata (`base_model` only when given, `model-index` only with results) and the text."""
    metadata = {
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "image-segmentation",
        "tags": ["possam", "panoptic-segmentation", "open-vocabulary-segmentation", "segment-anything", "clip"],
    }
    if datasets:
        metadata["datasets"] = datasets
    if base_models:
        metadata["base_model"] = base_models
    if results:
        metadata["model-index"] = [{"name": model_name, "results": results}]
    table = [
        f"| {entry['dataset']['name']} | "
        + " | ".join(next((f"{m['value']}" for m in entry["metrics"] if m["name"] == name), "–") for name, _ in METRICS)
        + " |"
        for entry in results
    ]
    results_section = (
        "| evaluation | PQ | SQ | RQ | mAP | mIoU |\n|---|---|---|---|---|---|\n" + "\n".join(table)
        if table else "No evaluation results are recorded for this model."
    )
    body = f"""{MARKER}

# {model_name}

{description}

{towers}

## Model

PosSAM (Panoptic Open-vocabulary Segment Anything, arXiv 2403.09620) segments an image into things and stuff for any
list of class names. This model pairs a frozen **SAM ViT-{sam_size(config).capitalize()}** image encoder with a frozen
**{clip_kind(config)}** CLIP; the trainable part is a feature pyramid, Mask2Former's pixel decoder and masked-attention decoder
({config.num_queries} queries, {config.decoder_layers - 1} layers), an IoU head and Local Discriminative Pooling
(`ldp_fusion="{config.ldp_fusion}"`). Inference combines LDP and CLIP with MASE (`ensemble_mode="{config.ensemble_mode}"`).

| parameters | count |
|---|---:|
| frozen (SAM encoder and prompt decoder, CLIP) | {counts['frozen']:,} |
| trainable | {counts['trainable']:,} |

## Results

{results_section}

## Usage

The folder carries thin remote code (`*_possam.py`, one import each) that loads the installed `possam` package, so
transformers finds PosSAM without `import possam` (`pip install possam` first):

```python
from transformers import pipeline

segmenter = pipeline(model="path/or/hub-id/of/{model_name}", trust_remote_code=True)  # task: open-vocab-panoptic
segments = segmenter("image.jpg", candidate_labels=["person", "car", "road", "sky"], stuff_labels=["road", "sky"])
```

With `import possam`, `pipeline("open-vocab-panoptic", model=...)`, `AutoModel` and `AutoProcessor` work without
`trust_remote_code`.

## Intended use

Open-vocabulary panoptic, instance and semantic segmentation of natural images: give class names at inference
time, including names never seen in training. Research and prototyping; not validated for safety-critical use.

## Limitations

- Class names are matched through CLIP text embeddings: rare, ambiguous or very fine-grained names are less reliable,
  and CLIP's biases carry over.
- Inputs are resized so the longest side is {config.image_size} and padded; very small objects may be missed.
- Scores are class probability times predicted mask IoU: use a low threshold (the pipeline's default is 0.0).

## Training

{training}

## Compute

{compute}

## Citation

```bibtex
@article{{vs2024possam,
  title   = {{PosSAM: Panoptic Open-vocabulary Segment Anything}},
  author  = {{VS, Vibashan and Borse, Shubhankar and Park, Hyojin and Das, Debasmit and Patel, Vishal and
             Hayat, Munawar and Porikli, Fatih}},
  journal = {{arXiv preprint arXiv:2403.09620}},
  year    = {{2024}}
}}
```
"""
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, width=120) + "---\n\n" + body


def paper_card(preset: str) -> str:
    """The card of PosSAM-B/L/H (`model_cards/`): the paper's reported results, no weights."""
    letter = {"base": "B", "large": "L", "huge": "H"}[preset]
    config = possam_preset(preset)
    results = [
        model_index_entry(*SETTINGS[setting], dict(zip([m for m, _ in METRICS], values)), PAPER)
        for setting, values in PAPER_RESULTS[preset].items()
    ]
    return render(
        f"PosSAM-{letter}",
        config,
        config_parameter_counts(config),
        results,
        description=(
            f"PosSAM-{letter}: SAM ViT-{letter} + OpenCLIP ConvNeXt-Large, as in Table 1 of the PosSAM paper. "
            "**Status.** No PosSAM weights are publicly available: the paper's authors released none, and this card's "
            "numbers are **reported by the paper, not reproduced**. Build and train this model with the `possam` "
            f"package (`possam convert build --preset {preset}`, then `possam train --config "
            "training/configs/coco_to_ade20k.json`)."
        ),
        towers=f"Frozen towers: SAM from `{SAM_CHECKPOINTS[preset]}`, CLIP from `{OPENCLIP_CONVNEXT_L}`.",
        base_models=[SAM_CHECKPOINTS[preset], OPENCLIP_CONVNEXT_L],
        training=PAPER_RECIPE,
        compute=(
            "The recipe is written for 8 GPUs with 2 images each. Training time and energy were not measured by the "
            "implementation's authors (no GPU was available to them)."
        ),
        datasets=["coco", "ade20k"],
    )


def folder_card(folder: str, config: PosSamConfig, counts: dict[str, int], model_name: str | None = None) -> str:
    """The card of a saved PosSAM folder, from its config and the files beside it."""
    model_name = model_name or os.path.basename(os.path.normpath(os.path.abspath(folder)))
    towers, base_models = describe_towers(config)
    measured = read_results(folder)
    results = []
    if measured is not None:
        values = metric_values(measured)
        if values:
            dataset = measured.get("eval_dataset") or "evaluation split (name not recorded)"
            results.append(model_index_entry("custom", dataset, "validation", values, None))
    if results:
        status = f"The results below were measured on this model (`{RESULTS_NAME}`)."
    else:
        status = "This model has not been evaluated."
    trained = "A PosSAM model trained with the `possam` package." if config.training_vocabulary else "An untrained PosSAM model."
    return render(
        model_name,
        config,
        counts,
        results,
        description=f"{trained} {status}",
        towers=towers,
        base_models=base_models,
        training=recorded_training(folder, config),
        compute="Not recorded with the model.",
    )


def write_model_card(folder: str, config: PosSamConfig, counts: dict[str, int], force: bool = False) -> str | None:
    """Writes `folder/README.md` unless a README.md not written by PosSAM is there (then returns None)."""
    path = os.path.join(folder, CARD_NAME)
    if os.path.isfile(path) and not force:
        with open(path, encoding="utf-8") as handle:
            if MARKER not in handle.read():
                return None
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(folder_card(folder, config, counts))
    return path


def save_results(folder: str, metrics: dict, eval_dataset: str | None) -> None:
    """Stores an evaluation's metrics, and the name of the data they were measured on, as `eval_results.json`: the
    next card rendered for the folder reports them."""
    os.makedirs(folder, exist_ok=True)
    values = {**metrics, "eval_dataset": eval_dataset} if eval_dataset else dict(metrics)
    with open(os.path.join(folder, RESULTS_NAME), "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2)


def record_results(folder: str, results_path: str, eval_dataset: str | None) -> None:
    """Stores the metrics of `possam evaluate --output_json` as the folder's `eval_results.json`."""
    with open(results_path, encoding="utf-8") as handle:
        measured = json.load(handle)
    if not isinstance(measured, dict) or not metric_values(measured):
        raise ValueError(f"{results_path} holds no PQ / SQ / RQ / mAP / mIoU values (keys like eval_PQ or pq).")
    save_results(folder, measured, eval_dataset)


# ---------------------------------------------------------------------------------------------------- command line


def main(argv: list[str], prog: str = "possam card") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Write the model card (README.md) of a saved PosSAM folder.")
    parser.add_argument("folder", nargs="?", help="a folder written by save_pretrained / possam train / convert build")
    parser.add_argument("--results", help=f"metrics JSON (possam evaluate --output_json) to record as {RESULTS_NAME}")
    parser.add_argument("--eval-dataset", help="name of the data the results were measured on")
    parser.add_argument("--force", action="store_true", help="overwrite a README.md that possam did not write")
    parser.add_argument("--paper-cards", metavar="DIR", help="write the PosSAM-B/L/H cards (paper's Table 1) into DIR")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return int(exit.code or 0)
    if args.paper_cards:
        for preset in ("base", "large", "huge"):
            path = os.path.join(args.paper_cards, f"possam-{preset[0]}.md")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(paper_card(preset))
            print(f"Wrote {path}")
        return 0
    if args.eval_dataset and not args.results:
        print(f"{prog}: error: --eval-dataset names the data of --results; give both", file=sys.stderr)
        return 2
    if not args.folder:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: give a model folder or --paper-cards DIR", file=sys.stderr)
        return 2
    try:
        if not os.path.isfile(os.path.join(args.folder, "config.json")):
            raise FileNotFoundError(f"{args.folder}: no config.json; give a folder written by save_pretrained.")
        config = PosSamConfig.from_pretrained(args.folder)
        if args.results:
            record_results(args.folder, args.results, args.eval_dataset)
        path = write_model_card(args.folder, config, config_parameter_counts(config), force=args.force)
    except (OSError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    if path is None:
        print(f"{prog}: error: {os.path.join(args.folder, CARD_NAME)} was not written by possam; --force replaces it",
              file=sys.stderr)
        return 1
    print(f"Wrote {path}")
    return 0
