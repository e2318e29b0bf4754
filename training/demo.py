"""`possam demo`: open-vocabulary panoptic segmentation end to end on a generated world, with no download.

    possam demo --output_dir possam-demo

1. writes the synthetic open-vocabulary world (`possam.training.open_vocabulary_world`, 12 thing + 6 stuff classes)
   as COCO-panoptic PNG + JSON: training scenes labelled with the 12 *seen* classes only (the 6 *unseen* ones are
   drawn but void), evaluation scenes labelled with all 18, and 384-pixel scenes to segment;
2. pretrains the toy CLIP on image-caption pairs of all 18 classes (`possam pretrain-clip`; re-used from
   `output_dir/clip` when it was pretrained with the same settings) and saves a random tiny SAM;
3. builds PosSAM on these towers and measures PQ on seen and unseen classes;
4. trains it on the seen labels with the towers frozen, through `possam train`'s code path, and measures again;
5. segments the held-out scenes with the full vocabulary through the `open-vocab-panoptic` pipeline (`--labels`
   changes it), writing overlays, COCO panoptic PNGs and JSON.

Everything here is synthetic: the CLIP knows only this world and the SAM is random. Real images need pretrained SAM
+ CLIP backbones (`possam convert build`) and a PosSAM trained on real data (`possam train`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


DISCLAIMER = (
    "This demo's CLIP was pretrained on the synthetic world only and its SAM is random: it segments these scenes, "
    "not photos. Real images need pretrained SAM + CLIP backbones (possam convert build) and a PosSAM trained on "
    "real data (possam train)."
)
SCENE_SIZE = 384


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="possam-demo", help="where data, CLIP, model and predictions go")
    parser.add_argument("--steps", type=int, default=400, help="PosSAM training steps (batch 4)")
    parser.add_argument("--clip_steps", type=int, default=300, help="toy CLIP pretraining steps (0: random CLIP)")
    parser.add_argument("--num_train_images", type=int, default=64)
    parser.add_argument("--num_eval_images", type=int, default=24)
    parser.add_argument("--labels", default=None,
                        help="vocabulary for the held-out scenes, comma-separated classes, '|' between synonyms "
                             "(default: all 18 classes of the world, seen and unseen)")
    parser.add_argument("--stuff", default=None, help="comma-separated stuff labels among --labels "
                                                      "(default: the world's stuff classes)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str], prog: str = "possam demo") -> int:
    args = _parser(prog).parse_args(argv)
    started = time.time()

    from transformers import set_seed

    from ..model_card import save_results
    from ..processing import PosSamProcessor
    from ..processing.output_files import write_json_atomically
    from ..processing.predict_cli import main as predict
    from .arguments import ModelArguments
    from .open_vocabulary_experiment import (
        evaluate_seen_unseen, model_arguments, prepare_toy_clip, save_random_sam, train_on_seen_classes,
    )
    from .open_vocabulary_world import SEEN_CLASSES, generate_world_split
    from .run import build_model

    data_dir = os.path.join(args.output_dir, "data")
    print(f"[1/5] Writing the open-vocabulary world to {data_dir} (training labels: seen classes only)")
    train_split = generate_world_split(os.path.join(data_dir, "train"), args.num_train_images, "seen", seed=args.seed)
    val_split = generate_world_split(os.path.join(data_dir, "val"), args.num_eval_images, "all", seed=args.seed + 10_000)
    scenes = generate_world_split(os.path.join(data_dir, "scenes"), 4, "all", image_size=SCENE_SIZE, seed=args.seed + 20_000)

    clip_dir, sam_dir = os.path.join(args.output_dir, "clip"), os.path.join(args.output_dir, "sam")
    print(f"[2/5] Toy CLIP ({args.clip_steps} contrastive steps on crops, regions and scenes of all classes) -> {clip_dir}")
    clip_started = time.time()
    clip_record, reused = prepare_toy_clip(clip_dir, args.clip_steps, args.seed)
    clip_seconds = round(time.time() - clip_started, 1)
    print(f"      {'re-used' if reused else f'pretrained in {clip_seconds} s'}; zero-shot crop accuracy "
          f"seen {clip_record['crop_seen_accuracy']}%, unseen {clip_record['crop_unseen_accuracy']}% "
          f"(chance {clip_record['chance_accuracy']}%)")
    save_random_sam(sam_dir, args.seed)

    model_args = model_arguments(sam_dir, clip_dir)
    set_seed(args.seed)
    untrained = build_model(model_args)
    processor = PosSamProcessor.for_model_config(untrained.config)
    print(f"[3/5] PQ of the untrained PosSAM on {args.num_eval_images} held-out scenes (all 18 classes)")
    before = evaluate_seen_unseen(untrained, processor, val_split, SEEN_CLASSES)
    print(f"      {before}")

    model_dir = os.path.join(args.output_dir, "model")
    print(f"[4/5] Training on the seen classes for {args.steps} steps (possam train, towers frozen) -> {model_dir}")
    training_started = time.time()
    train_on_seen_classes(model_args, train_split, model_dir, args.steps, args.seed)
    training_seconds = round(time.time() - training_started, 1)
    trained = build_model(ModelArguments(model_name_or_path=model_dir))
    after = evaluate_seen_unseen(trained, processor, val_split, SEEN_CLASSES)
    print(f"      after training: {after}")

    # Reported by the model card, which saving renders again.
    save_results(model_dir, after, f"{args.num_eval_images} held-out scenes of the synthetic open-vocabulary world")
    trained.save_pretrained(model_dir)

    predictions_dir = os.path.join(args.output_dir, "predictions")
    vocabulary = val_split.vocabulary
    labels = args.labels or ",".join(entry.replace(",", "|") for entry in vocabulary.entries)
    default_stuff = ",".join(label for label, thing in zip(vocabulary.labels, vocabulary.is_thing) if not thing)
    stuff = args.stuff if args.stuff is not None else (default_stuff if args.labels is None else "")
    print(f"[5/5] Segmenting {scenes.num_images} held-out {SCENE_SIZE}-pixel scenes with labels {labels!r} -> {predictions_dir}")
    images = sorted(os.path.join(scenes.image_dir, name) for name in os.listdir(scenes.image_dir))
    options = ["--stuff", stuff] if stuff else []
    status = predict([*images, "--model", model_dir, "--labels", labels, *options, "--out", predictions_dir])
    if status != 0:
        return status

    summary = {
        "pq_seen": after["pq_seen"],
        "pq_unseen": after["pq_unseen"],
        "before_training": before,
        "after_training": after,
        "clip": {"folder": clip_dir, "reused": reused, "seconds": clip_seconds, **clip_record},
        "training_steps": args.steps,
        "training_seconds": training_seconds,
        "seconds": round(time.time() - started, 1),
        "model": model_dir,
        "predictions": predictions_dir,
        "data": data_dir,
    }
    write_json_atomically(os.path.join(args.output_dir, "summary.json"), summary)
    print()
    print(f"PQ on held-out scenes, seen classes: {before['pq_seen']} before training -> {after['pq_seen']} after; "
          f"unseen classes (never labelled in training): {before['pq_unseen']} -> {after['pq_unseen']}.")
    print(f"Done in {summary['seconds']} s. Model: {model_dir}  Overlays: {predictions_dir}  Summary: "
          f"{os.path.join(args.output_dir, 'summary.json')}")
    print(DISCLAIMER)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
