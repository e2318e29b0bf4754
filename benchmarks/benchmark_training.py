"""Training benchmark: a training step with the frozen backbones in the loop vs with cached backbone features, and
the peak memory of tiny-preset training.

    python benchmarks/benchmark_training.py --preset base --repeats 2

Random weights, one synthetic 1024x1024 example with 10 segments and the 133 COCO classes. Writes
`benchmarks/results/training_<preset>.{json,md}`. Targets: cached features at least 1.8x faster per step; tiny-preset
training peak RSS <= 2 GiB (measured in a fresh process running `PosSamTrainer` on the synthetic dataset).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import (  # noqa: E402
    ActivationGuard,
    interleaved_seconds,
    peak_rss_of,
    spread,
    variance_preserving_init_,
    verdict,
    write_report,
)

from possam import PosSamModel, load_vocabulary, possam_preset  # noqa: E402
from possam.processing import PosSamProcessor  # noqa: E402


def synthetic_example(size: int, num_segments: int = 10, num_classes: int = 133):
    """Pixels and `num_segments` rectangular segments that tile the image in horizontal bands."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, size, size, generator=generator)
    masks = torch.zeros(num_segments, size, size)
    bounds = torch.linspace(0, size, num_segments + 1).long()
    for index in range(num_segments):
        masks[index, bounds[index] : bounds[index + 1]] = 1
    classes = torch.randint(0, num_classes, (num_segments,), generator=generator)
    return pixels, [masks], [classes]


def step_times(preset: str, repeats: int, profile_path: str | None = None) -> dict:
    config = possam_preset(preset)
    torch.manual_seed(0)
    model = PosSamModel(config).train()
    variance_preserving_init_(model.sam, model.clip)  # realistic activation magnitudes (see common.py)
    processor = PosSamProcessor.for_model_config(config)
    text = processor(text=load_vocabulary("coco_panoptic"))
    pixels, masks, classes = synthetic_example(config.image_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    with ActivationGuard({"sam": model.sam, "fpn": model.fpn, "pixel_decoder": model.pixel_decoder}) as guard:
        features = model.get_image_features(pixels)
        model(image_features=features, **text)
    assert set(guard.checked) == {"sam", "fpn", "pixel_decoder"}, guard.checked

    def step(**image_inputs):
        loss = model(**image_inputs, mask_labels=masks, class_labels=classes, **text).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    times = interleaved_seconds(
        {
            "step_with_backbones": lambda: step(pixel_values=pixels),
            "step_with_cached_features": lambda: step(image_features=features),
        },
        repeats=repeats,
    )
    if profile_path:
        from torch.profiler import profile as torch_profile

        with torch_profile() as profiler:
            step(image_features=features)
        with open(profile_path, "w", encoding="utf-8") as handle:
            handle.write(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25) + "\n")
    return times


def tiny_training_peak_rss() -> float:
    """Fresh process: `possam train` on the synthetic dataset with the tiny preset, 20 steps, batch 4."""
    with tempfile.TemporaryDirectory() as directory:
        snippet = f"""
import sys
from possam.training import generate_synthetic_coco_panoptic
from possam.cli import main
data = generate_synthetic_coco_panoptic({directory!r} + "/data", num_images=16)
main(["train", "--preset", "tiny", "--train_annotations", data.json_path, "--train_images", data.image_dir,
      "--output_dir", {directory!r} + "/out", "--max_steps", "20", "--per_device_train_batch_size", "4",
      "--save_strategy", "no", "--report_to", "none", "--use_cpu", "--disable_tqdm", "true"])
sys.path.insert(0, {os.path.dirname(__file__)!r})
from common import peak_rss_gib
print(peak_rss_gib())
"""
        return peak_rss_of(["-c", snippet])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base", choices=("tiny", "base", "large", "huge"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="also write the profile of one cached-features step")
    parser.add_argument("--output-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    os.makedirs(args.output_dir, exist_ok=True)
    profile_path = os.path.join(args.output_dir, f"training_{args.preset}_profile.txt") if args.profile else None
    rounds = step_times(args.preset, args.repeats, profile_path)
    times = {name: statistics.median(values) for name, values in rounds.items()}
    per_round = [with_backbones / cached for with_backbones, cached in zip(rounds["step_with_backbones"], rounds["step_with_cached_features"])]
    speedup = statistics.median(per_round)
    rss = tiny_training_peak_rss()
    rows = [
        ("training step, backbones in the loop (s)", f"{times['step_with_backbones']:.2f}", "", ""),
        ("training step, cached features (s)", f"{times['step_with_cached_features']:.2f}", "", ""),
        ("speed-up from cached features (median of rounds; min-max)", f"{speedup:.2f}x ({spread(per_round, '{:.2f}x')})",
         ">= 1.8x", verdict(speedup >= 1.8)),
        ("tiny-preset training peak RSS (GiB)", f"{rss:.2f}", "<= 2", verdict(rss <= 2.0)),
    ]
    write_report(f"training_{args.preset}", {"preset": args.preset, "seconds": times, "rounds": rounds, "speedup": speedup,
                                             "tiny_training_peak_rss_gib": rss}, rows, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
