"""Renders a Hugging Face model card (README.md with YAML metadata) for a PosSAM model.

Two uses, one renderer:

    # a checkpoint you trained: its own config, parameter counts and evaluation results (from `possam evaluate`)
    python model_cards/render_model_card.py card runs/possam-b-coco --results ade.json \
        --eval-dataset "ADE20K panoptic val (150 classes)" --train-dataset "COCO panoptic train2017" \
        --out runs/possam-b-coco/README.md

    # the cards of PosSAM-B/L/H in model_cards/, whose only results are the paper's Table 1, marked as such
    python model_cards/render_model_card.py paper-cards --out-dir model_cards

A trained checkpoint's card states only what was measured on it; the paper's numbers appear only in the paper cards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import yaml

from possam import PosSamConfig, PosSamModel, possam_preset
from possam.backbones import parameter_counts


PAPER = {"name": "Reported by the PosSAM paper (arXiv 2403.09620), Table 1", "url": "https://arxiv.org/abs/2403.09620"}
METRICS = (("PQ", "pq"), ("SQ", "sq"), ("RQ", "rq"), ("mAP", "map"), ("mIoU", "mean_iou"))
SAM_CHECKPOINTS = {"base": "facebook/sam-vit-base", "large": "facebook/sam-vit-large", "huge": "facebook/sam-vit-huge"}
OPENCLIP_CONVNEXT_L = "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup"
SAM_SIZE_BY_WIDTH = {768: "base", 1024: "large", 1280: "huge"}

# Table 1 of the paper: PQ, SQ, RQ, mAP, mIoU (None: not reported).
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


def sam_size(config: PosSamConfig) -> str:
    return SAM_SIZE_BY_WIDTH.get(config.sam_vision_config.hidden_size, f"custom ({config.sam_vision_config.hidden_size}-wide)")


def count_parameters(config: PosSamConfig) -> dict[str, int]:
    with torch.device("meta"):
        model = PosSamModel(config)
    return parameter_counts(model)["total"]


def model_index_entry(name: str, dataset_type: str, dataset_name: str, split: str, values: dict, source: dict | None) -> dict:
    result = {
        "task": {"type": "image-segmentation", "name": "Open-vocabulary panoptic segmentation"},
        "dataset": {"type": dataset_type, "name": dataset_name, "split": split},
        "metrics": [
            {"type": metric_type, "value": round(float(values[name]), 2), "name": name, "verified": False}
            for name, metric_type in METRICS
            if values.get(name) is not None and values[name] == values[name]
        ],
    }
    if source:
        result["source"] = dict(source)  # a copy: a shared dict would be dumped as a YAML anchor
    return result


def render(
    model_name: str,
    config: PosSamConfig,
    results: list[dict],
    description: str,
    status: str,
    base_models: list[str],
    datasets: list[str],
    training: str,
    compute: str,
) -> str:
    counts = count_parameters(config)
    metadata = {
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "image-segmentation",
        "tags": ["possam", "panoptic-segmentation", "open-vocabulary-segmentation", "segment-anything", "clip"],
        "datasets": datasets,
        "base_model": base_models,
        "model-index": [{"name": model_name, "results": results}],
    }
    clip = "OpenCLIP ConvNeXt-Large" if config.clip_config.is_convnext else "a transformers ViT CLIP"
    table = [f"| {entry['dataset']['name']} | " + " | ".join(
        next((f"{m['value']}" for m in entry["metrics"] if m["name"] == name), "–") for name, _ in METRICS
    ) + " |" for entry in results]
    results_section = (
        "| evaluation | PQ | SQ | RQ | mAP | mIoU |\n|---|---|---|---|---|---|\n" + "\n".join(table)
        if table else "No evaluation results are recorded for this model."
    )
    body = f"""# {model_name}

{description}

**Status.** {status}

## Model

PosSAM (Panoptic Open-vocabulary Segment Anything, arXiv 2403.09620) segments an image into things and stuff for any
list of class names. This model pairs the frozen **SAM ViT-{sam_size(config).capitalize()}** image encoder with a frozen
**{clip}** CLIP; the trainable part is a feature pyramid, Mask2Former's pixel decoder and masked-attention decoder
({config.num_queries} queries, {config.decoder_layers - 1} layers), an IoU head and Local Discriminative Pooling
(`ldp_fusion="{config.ldp_fusion}"`). Inference combines LDP and CLIP with MASE (`ensemble_mode="{config.ensemble_mode}"`).

| parameters | count |
|---|---:|
| frozen (SAM + CLIP) | {counts['frozen']:,} |
| trainable | {counts['trainable']:,} |

## Results

{results_section}

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

## Usage

```python
import possam  # registers PosSAM with transformers
from transformers import pipeline

segmenter = pipeline("open-vocab-panoptic", model="path/to/{model_name}")
segments = segmenter("image.jpg", candidate_labels=["person", "car", "road", "sky"], stuff_labels=["road", "sky"])
```

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
    """The card of PosSAM-B/L/H: the paper's reported results, no weights."""
    letter = {"base": "B", "large": "L", "huge": "H"}[preset]
    results = [
        model_index_entry(f"PosSAM-{letter}", *SETTINGS[setting], dict(zip([m for m, _ in METRICS], values)), PAPER)
        for setting, values in PAPER_RESULTS[preset].items()
    ]
    return render(
        f"PosSAM-{letter}",
        possam_preset(preset),
        results,
        description=f"PosSAM-{letter}: SAM ViT-{letter} + OpenCLIP ConvNeXt-Large, as in Table 1 of the PosSAM paper.",
        status=(
            "No PosSAM weights are publicly available: the paper's authors released none, and this card's numbers are "
            "**reported by the paper, not reproduced**. Build and train this model with the `possam` package "
            f"(`possam convert build --preset {preset}`, then `possam train --config training/configs/coco_to_ade20k.json`)."
        ),
        base_models=[SAM_CHECKPOINTS[preset], OPENCLIP_CONVNEXT_L],
        datasets=["coco", "ade20k"],
        training=PAPER_RECIPE,
        compute=(
            "The recipe is written for 8 GPUs with 2 images each. Training time and energy were not measured by the "
            "implementation's authors (no GPU was available to them)."
        ),
    )


def checkpoint_card(checkpoint: str, results_path: str | None, model_name: str, train_dataset: str, eval_dataset: str | None) -> str:
    """The card of a trained checkpoint: its config and the results measured on it (`possam evaluate` JSON)."""
    config = PosSamConfig.from_pretrained(checkpoint)
    results = []
    if results_path:
        with open(results_path, encoding="utf-8") as handle:
            measured = json.load(handle)
        # `possam evaluate` names its metrics in lowercase snake case: eval_pq, eval_map, eval_miou, ...
        values = {name: measured.get(f"eval_{name.lower()}") for name, _ in METRICS}
        if all(value is None for value in values.values()):
            raise ValueError(f"{results_path} holds no eval_pq / eval_sq / eval_rq / eval_map / eval_miou values.")
        if not eval_dataset:
            raise ValueError("--eval-dataset must name the data the results were measured on.")
        results.append(model_index_entry(model_name, "custom", eval_dataset, "validation", values, None))
    size = sam_size(config)
    return render(
        model_name,
        config,
        results,
        description=f"A PosSAM model trained on {train_dataset}.",
        status="The results below were measured on this checkpoint with `possam evaluate`." if results else
        "This checkpoint has not been evaluated.",
        base_models=[SAM_CHECKPOINTS.get(size, "custom SAM"), OPENCLIP_CONVNEXT_L if config.clip_config.is_convnext else "CLIP"],
        datasets=[train_dataset],
        training=recorded_training(checkpoint, config),
        compute="Not recorded with the checkpoint.",
    )


def recorded_training(checkpoint: str, config: PosSamConfig) -> str:
    """What the checkpoint's saved `TrainingArguments` (written by `possam train`) say about its training."""
    path = os.path.join(checkpoint, "training_args.bin")
    classes = f"{len(config.training_vocabulary)} training classes" if config.training_vocabulary else "unknown classes"
    if not os.path.isfile(path):
        return f"Trained on {classes}; the training arguments were not saved with this checkpoint."
    arguments = torch.load(path, weights_only=False)  # the checkpoint owner's own pickled TrainingArguments
    schedule = f"x{arguments.lr_decay_factor} at steps {arguments.lr_milestones}" if getattr(arguments, "lr_milestones", None) else arguments.lr_scheduler_type
    return (
        f"Trained with `possam train` on {classes}: {arguments.max_steps} steps, batch {arguments.per_device_train_batch_size} "
        f"per device, learning rate {arguments.learning_rate} ({schedule}), weight decay {arguments.weight_decay}, "
        f"gradient clipping {arguments.max_grad_norm}, {'bf16' if arguments.bf16 else 'fp16' if arguments.fp16 else 'fp32'}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    card = commands.add_parser("card", help="card of a trained checkpoint")
    card.add_argument("checkpoint")
    card.add_argument("--results", help="metrics JSON written by `possam evaluate --output_json`")
    card.add_argument("--model-name", default=None)
    card.add_argument("--train-dataset", required=True)
    card.add_argument("--eval-dataset", default=None)
    card.add_argument("--out", required=True)
    paper = commands.add_parser("paper-cards", help="the PosSAM-B/L/H cards with the paper's reported results")
    paper.add_argument("--out-dir", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args(argv)
    if args.command == "card":
        name = args.model_name or os.path.basename(os.path.normpath(args.checkpoint))
        text = checkpoint_card(args.checkpoint, args.results, name, args.train_dataset, args.eval_dataset)
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        for preset, letter in (("base", "b"), ("large", "l"), ("huge", "h")):
            with open(os.path.join(args.out_dir, f"possam-{letter}.md"), "w", encoding="utf-8") as handle:
                handle.write(paper_card(preset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
