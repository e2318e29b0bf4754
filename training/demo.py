"""`possam demo`: the whole PosSAM workflow on an embedded, generated dataset, with no download.

    possam demo --output_dir possam-demo

1. writes a synthetic COCO-panoptic dataset (things: balls, boxes, kites; stuff: sky, grass) as real PNG + JSON files;
2. builds the tiny PosSAM (random SAM and CLIP towers) and measures its panoptic quality on held-out images;
3. trains it with `PosSamTrainer` (large-scale jitter, deep supervision, MASE at evaluation) and measures again;
4. saves the trained model with its processor, and segments held-out scenes through the `open-vocab-panoptic`
   pipeline with a vocabulary you can change (`--labels`), writing color overlays and panoptic PNGs.

The tiny model's SAM and CLIP are random: it learns this synthetic world only, and class names outside its training
vocabulary mean nothing to it. Real images need pretrained SAM + CLIP backbones (`possam convert build`) and a
PosSAM trained on real data (`possam train`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


DISCLAIMER = (
    "This demo's PosSAM has random SAM and CLIP towers and learned only the synthetic scenes above. Real images need "
    "pretrained SAM + CLIP backbones (possam convert build) and a PosSAM trained on real data (possam train)."
)


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="possam-demo", help="where data, model and predictions go")
    parser.add_argument("--steps", type=int, default=1500, help="training steps (batch 4)")
    parser.add_argument("--num_train_images", type=int, default=64)
    parser.add_argument("--num_eval_images", type=int, default=16)
    parser.add_argument("--labels", default=None,
                        help="vocabulary for the held-out scenes, comma-separated classes, '|' between synonyms "
                             "(default: the training classes)")
    parser.add_argument("--stuff", default=None, help="comma-separated stuff labels among --labels (default: sky,grass)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str], prog: str = "possam demo") -> int:
    args = _parser(prog).parse_args(argv)
    started = time.time()

    from transformers import set_seed

    from .. import PosSamModel, possam_preset
    from ..model_card import save_results
    from ..processing import PosSamProcessor, embed_default_vocabulary
    from .collator import PosSamDataCollator
    from .coco_panoptic import load_coco_panoptic
    from .dataset import PanopticEvaluationDataset, PanopticTrainingDataset
    from .evaluation import evaluate_panoptic
    from .synthetic import generate_synthetic_coco_panoptic
    from .trainer import PosSamTrainer, PosSamTrainingArguments
    from ..processing.output_files import write_json_atomically
    from ..processing.predict_cli import main as predict

    data_dir = os.path.join(args.output_dir, "data")
    print(f"[1/4] Writing the synthetic dataset to {data_dir}")
    splits = {
        "train": generate_synthetic_coco_panoptic(os.path.join(data_dir, "train"), args.num_train_images, seed=args.seed),
        "val": generate_synthetic_coco_panoptic(os.path.join(data_dir, "val"), args.num_eval_images, seed=args.seed + 10_000),
        "scenes": generate_synthetic_coco_panoptic(os.path.join(data_dir, "scenes"), 4, seed=args.seed + 20_000),
    }
    train, vocabulary = load_coco_panoptic(splits["train"].json_path, splits["train"].image_dir, synonyms_from=splits["train"].vocabulary_path)
    val, val_vocabulary = load_coco_panoptic(splits["val"].json_path, splits["val"].image_dir, synonyms_from=splits["val"].vocabulary_path)

    set_seed(args.seed)
    model = PosSamModel(possam_preset("tiny"))
    processor = PosSamProcessor.for_model_config(model.config)
    eval_dataset = PanopticEvaluationDataset(val, processor.image_processor)
    eval_collator = PosSamDataCollator(processor.encode_vocabulary(val_vocabulary))

    def panoptic_quality() -> dict[str, float]:
        metrics = evaluate_panoptic(model, eval_dataset, eval_collator, processor.image_processor, val_vocabulary, batch_size=4)
        return {name: round(metrics[f"eval_{name}"], 1) for name in ("pq", "pq_things", "pq_stuff", "miou")}

    print(f"[2/4] Panoptic quality of the untrained tiny PosSAM on {len(val)} held-out images")
    before = panoptic_quality()
    print(f"      {before}")

    print(f"[3/4] Training for {args.steps} steps with PosSamTrainer")
    training_args = PosSamTrainingArguments(
        output_dir=os.path.join(args.output_dir, "checkpoints"), max_steps=args.steps, per_device_train_batch_size=4,
        learning_rate=1e-3, warmup_steps=20, logging_steps=max(1, args.steps // 10), save_strategy="no",
        report_to="none", seed=args.seed, use_cpu=True,
    )
    trainer = PosSamTrainer(
        model=model,
        args=training_args,
        # The scenes are only 128 px: a narrower jitter than the recipe's 0.1-2.0 keeps small objects visible.
        train_dataset=PanopticTrainingDataset(train, processor.image_processor, seed=args.seed, min_scale=0.5, max_scale=1.5),
        data_collator=PosSamDataCollator(processor.encode_vocabulary(vocabulary)),
        processing_class=processor,
    )
    trainer.train()
    after = panoptic_quality()
    print(f"      after training: {after}")

    model_dir = os.path.join(args.output_dir, "model")
    model.config.training_vocabulary = vocabulary.entries
    embed_default_vocabulary(model, processor, vocabulary)
    save_results(model_dir, after, f"{len(val)} held-out synthetic images")  # reported by the model card
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)

    predictions_dir = os.path.join(args.output_dir, "predictions")
    labels = args.labels or ",".join(entry.replace(",", "|") for entry in vocabulary.entries)
    stuff = args.stuff if args.stuff is not None else ("sky,grass" if args.labels is None else "")
    print(f"[4/4] Segmenting {splits['scenes'].num_images} held-out scenes with labels {labels!r} -> {predictions_dir}")
    images = sorted(os.path.join(splits["scenes"].image_dir, name) for name in os.listdir(splits["scenes"].image_dir))
    options = ["--stuff", stuff] if stuff else []
    status = predict([*images, "--model", model_dir, "--labels", labels, *options, "--out", predictions_dir])
    if status != 0:
        return status

    summary = {
        "panoptic_quality_before": before,
        "panoptic_quality_after": after,
        "training_steps": args.steps,
        "seconds": round(time.time() - started, 1),
        "model": model_dir,
        "predictions": predictions_dir,
        "data": data_dir,
    }
    write_json_atomically(os.path.join(args.output_dir, "summary.json"), summary)
    print()
    print(f"PQ on held-out synthetic images: {before['pq']} before training -> {after['pq']} after "
          f"(things {after['pq_things']}, stuff {after['pq_stuff']}, mIoU {after['miou']}).")
    print(f"Done in {summary['seconds']} s. Model: {model_dir}  Overlays: {predictions_dir}  Summary: "
          f"{os.path.join(args.output_dir, 'summary.json')}")
    print(DISCLAIMER)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
