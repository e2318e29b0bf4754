"""Open-vocabulary ablation: what the pretrained CLIP, MASE and LDP each add on classes PosSAM never had labels for.

    python benchmarks/open_vocabulary.py --quick        # 300 CLIP steps, 400 PosSAM steps per model (possam demo's defaults)
    python benchmarks/open_vocabulary.py                # the longer recipe (600 CLIP steps, 1500 PosSAM steps)

In the synthetic open-vocabulary world (`possam.training.open_vocabulary_world`: 12 thing + 6 stuff classes, 6 of
them unseen), PosSAM-tiny is trained on the seen classes' labels once per (CLIP towers, LDP fusion):

    CLIP = toy-pretrained on image-caption pairs of all 18 classes (`possam pretrain-clip`) | random (same towers, 0 steps)
    LDP fusion = self_attention (PosSAM) | none (FC-CLIP-style: the mask embedding alone is classified)

and each trained model is evaluated on held-out scenes labelled with all 18 classes under every class-ensemble mode
(mase, geometric, ldp_only, clip_only), all from one forward pass per image. The four models train in worker
processes (`--workers`, one thread each; the random-CLIP ones while the toy CLIP pretrains). Writes
`benchmarks/results/open_vocabulary.{json,md}`: one row per (clip, ensemble_mode, ldp_fusion) with PQ, PQ_seen and
PQ_unseen, plus the issue's targets checked on the pretrained-CLIP, self-attention rows.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, verdict  # noqa: E402

from possam.processing import PosSamProcessor  # noqa: E402
from possam.processing.mase import ENSEMBLE_MODES  # noqa: E402
from possam.training.open_vocabulary_experiment import (  # noqa: E402
    evaluate_seen_unseen,
    model_arguments,
    prepare_toy_clip,
    save_random_sam,
    train_on_seen_classes,
)
from possam.training.clip_pretraining import load_pretraining_record  # noqa: E402
from possam.training.open_vocabulary_world import SEEN_CLASSES, generate_world_split  # noqa: E402
from possam.training.arguments import ModelArguments  # noqa: E402
from possam.training.run import build_model  # noqa: E402


SETTINGS = {
    # clip_steps, training steps, training scenes, evaluation scenes
    "quick": {"clip_steps": 300, "steps": 400, "num_train_images": 64, "num_eval_images": 24},
    "full": {"clip_steps": 600, "steps": 1500, "num_train_images": 96, "num_eval_images": 32},
}
LDP_FUSIONS = ("self_attention", "none")


def _train_and_evaluate(job: tuple) -> tuple[str, list[dict], float]:
    """One (CLIP, LDP fusion) model: train on the seen labels, evaluate every ensemble mode. Runs in a worker."""
    clip, fusion, work_dir, settings, seed = job
    torch.set_num_threads(1)
    started = time.time()
    model_dir = os.path.join(work_dir, f"model_{clip}_{fusion}")
    train_split = generate_world_split(os.path.join(work_dir, "train"), settings["num_train_images"], "seen", seed=seed)
    val_split = generate_world_split(os.path.join(work_dir, "val"), settings["num_eval_images"], "all", seed=seed + 10_000)
    train_on_seen_classes(
        model_arguments(os.path.join(work_dir, "sam"), os.path.join(work_dir, f"clip_{clip}"), ldp_fusion=fusion),
        train_split, model_dir, settings["steps"], seed,
    )
    model = build_model(ModelArguments(model_name_or_path=model_dir))
    per_mode = evaluate_seen_unseen(
        model, PosSamProcessor.for_model_config(model.config), val_split, SEEN_CLASSES, ENSEMBLE_MODES
    )
    rows = [
        {"clip": clip, "ensemble_mode": mode, "ldp_fusion": fusion, **{k: m[k] for k in ("pq", "pq_seen", "pq_unseen")}}
        for mode, m in per_mode.items()
    ]
    print(json.dumps(rows), flush=True)
    return f"train_and_evaluate_{clip}_{fusion}", rows, round(time.time() - started, 1)


def _prepare_clip(job: tuple) -> tuple[str, dict, float]:
    clip, steps, work_dir, seed = job
    torch.set_num_threads(1)
    started = time.time()
    record, _ = prepare_toy_clip(os.path.join(work_dir, f"clip_{clip}"), steps, seed)
    return clip, record, round(time.time() - started, 1)


def run(settings: dict, work_dir: str, seed: int = 0, workers: int = 2) -> dict:
    """Trains and evaluates the 4 (CLIP, fusion) models, `workers` at a time in separate processes (1 thread each):
    the random-CLIP models train while the toy CLIP pretrains, then the two pretrained-CLIP models."""
    generate_world_split(os.path.join(work_dir, "train"), settings["num_train_images"], "seen", seed=seed)
    generate_world_split(os.path.join(work_dir, "val"), settings["num_eval_images"], "all", seed=seed + 10_000)
    save_random_sam(os.path.join(work_dir, "sam"), seed)
    _prepare_clip(("random", 0, work_dir, seed))
    records, seconds, results = {}, {}, {}
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        pretraining = pool.apply_async(_prepare_clip, (("pretrained", settings["clip_steps"], work_dir, seed),))
        random_jobs = [pool.apply_async(_train_and_evaluate, (("random", f, work_dir, settings, seed),)) for f in LDP_FUSIONS]
        clip, records["pretrained"], seconds["clip_pretrained"] = pretraining.get()
        pretrained_jobs = [
            pool.apply_async(_train_and_evaluate, (("pretrained", f, work_dir, settings, seed),)) for f in LDP_FUSIONS
        ]
        for job in pretrained_jobs + random_jobs:
            name, rows, elapsed = job.get()
            results[name], seconds[name] = rows, elapsed
    records["random"] = load_pretraining_record(os.path.join(work_dir, "clip_random"))
    order = [f"train_and_evaluate_{c}_{f}" for c in ("pretrained", "random") for f in LDP_FUSIONS]
    return {"rows": [row for name in order for row in results[name]], "clip_pretraining": records, "seconds": seconds}


def targets(rows: list[dict]) -> list[tuple[str, str, bool]]:
    """The issue's targets on the default recipe (toy-pretrained CLIP, MASE, self-attention LDP)."""
    row = lambda clip, mode, fusion="self_attention": next(
        r for r in rows if (r["clip"], r["ensemble_mode"], r["ldp_fusion"]) == (clip, mode, fusion)
    )
    mase, random, geometric = row("pretrained", "mase"), row("random", "mase"), row("pretrained", "geometric")
    return [
        (f"PQ_unseen >= 0.5 x PQ_seen ({mase['pq_unseen']} vs 0.5 x {mase['pq_seen']})",
         f"{mase['pq_unseen'] / max(mase['pq_seen'], 1e-9):.2f}x", mase["pq_unseen"] >= 0.5 * mase["pq_seen"]),
        (f"PQ_unseen >= 5 x PQ_unseen with random CLIP ({mase['pq_unseen']} vs {random['pq_unseen']})",
         f"{mase['pq_unseen'] / max(random['pq_unseen'], 1e-9):.1f}x" if random["pq_unseen"] else "inf",
         mase["pq_unseen"] >= 5 * random["pq_unseen"]),
        (f"MASE >= geometric on PQ_unseen ({mase['pq_unseen']} vs {geometric['pq_unseen']})",
         f"{mase['pq_unseen'] - geometric['pq_unseen']:+.1f}", mase["pq_unseen"] >= geometric["pq_unseen"]),
    ]


def write(results: dict, output_dir: str, name: str = "open_vocabulary") -> str:
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, f"{name}.json"), "w", encoding="utf-8") as handle:
        json.dump({"machine": machine(), **results}, handle, indent=2)
    lines = [f"Machine: {machine()}. Settings: {json.dumps(results['settings'])}.", ""]
    lines += ["| CLIP | ensemble | LDP fusion | PQ | PQ_seen | PQ_unseen |", "|---|---|---|---:|---:|---:|"]
    lines += [
        f"| {r['clip']} | {r['ensemble_mode']} | {r['ldp_fusion']} | {r['pq']} | {r['pq_seen']} | {r['pq_unseen']} |"
        for r in results["rows"]
    ]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {label} | {value} | {verdict(ok)} |" for label, value, ok in targets(results["rows"])]
    clip = results["clip_pretraining"]["pretrained"]
    lines += ["", f"Toy CLIP zero-shot accuracy among all 18 classes (chance {clip['chance_accuracy']}%): crops seen "
              f"{clip['crop_seen_accuracy']}%, unseen {clip['crop_unseen_accuracy']}%; mask-pooled regions seen "
              f"{clip['region_seen_accuracy']}%, unseen {clip['region_unseen_accuracy']}% (random towers: crops "
              f"unseen {results['clip_pretraining']['random']['crop_unseen_accuracy']}%).",
              f"Wall-clock seconds: {json.dumps(results['seconds'])}."]
    markdown = "\n".join(lines) + "\n"
    with open(os.path.join(output_dir, f"{name}.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    print(markdown)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and scenes: <= 10 minutes on 2 idle cores")
    parser.add_argument("--output_dir", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--work_dir", default=None, help="where data, towers and models go (default: a temp dir)")
    parser.add_argument("--workers", type=int, default=2, help="models trained at the same time (1 thread each)")
    args = parser.parse_args()
    settings = SETTINGS["quick" if args.quick else "full"]
    started = time.time()
    with tempfile.TemporaryDirectory() as temporary:
        results = run(settings, args.work_dir or temporary, workers=args.workers)
    results["settings"] = {"name": "quick" if args.quick else "full", **settings}
    results["seconds"]["total"] = round(time.time() - started, 1)
    write(results, args.output_dir)


if __name__ == "__main__":
    main()
