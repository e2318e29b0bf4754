"""Inference benchmark: time per stage, end-to-end time, PosSAM's share over the frozen encoders, a Mask2Former peer.

    python benchmarks/benchmark_inference.py --preset base --repeats 3 [--compile] [--full]

Random weights (no download), re-initialized so that every tower's activations have realistic magnitude
(`common.variance_preserving_init_`), checked once before timing (`common.ActivationGuard` fails on denormal or
collapsed stage inputs/outputs). The compared calls run interleaved in rounds; ratios are computed per round and
reported as median and min-max. Prints a markdown table and writes `benchmarks/results/inference_<preset>.{json,md}`.
Targets (PosSAM-B, 1024x1024, CPU):

- PosSAM's own stages (end-to-end minus the frozen SAM and CLIP image encoders, both timed within the same call)
  <= 20% of the encoders;
- FPN + pixel decoder <= 2.0 s on 2 idle cores; post-processing <= 3% of end-to-end;
- a cached vocabulary runs the text tower 0 times, also in a second process (disk cache);
- an 847-class vocabulary costs <= 5% more than a 150-class one once cached; peak RSS <= 5 GiB (`--full`).

Also reported: transformers' stock `Mask2FormerForUniversalSegmentation` (Swin-T-sized, 1024x1024, 250 queries) end to
end with its own pre- and post-processing, as a ratio to PosSAM end to end; with `--compile`, the compile time and
compiled speed of PosSAM's heavy stages (`PosSamModel.compile_stages`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import (  # noqa: E402
    ActivationGuard,
    ModuleTimer,
    interleaved_seconds,
    median_seconds,
    peak_rss_of,
    spread,
    variance_preserving_init_,
    verdict,
    write_report,
)

from possam import PosSamModel, possam_preset  # noqa: E402
from possam.configuration import Vocabulary, load_vocabulary  # noqa: E402
from possam.decoder import ResizedMaskFeatures  # noqa: E402
from possam.processing import PosSamProcessor  # noqa: E402


def build(preset: str, attn_implementation: str = "sdpa"):
    config = possam_preset(preset)
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    model = PosSamModel(config).eval()
    variance_preserving_init_(model.sam, model.clip)
    model.text_classifier.clear_cache()  # the text tower's weights changed
    return model, PosSamProcessor.for_model_config(config)


def build_mask2former(image_size: int):
    """transformers' stock panoptic Mask2Former with a Swin-T-sized backbone, random weights, 250 queries."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig
    from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

    swin = SwinConfig(
        image_size=image_size, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(backbone_config=swin, num_queries=250, num_labels=133)
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    variance_preserving_init_(model.model.pixel_level_module.encoder)
    processor = Mask2FormerImageProcessorPil(size={"height": image_size, "width": image_size}, do_resize=True)
    return model, processor

def test_image(height: int = 480, width: int = 640) -> np.ndarray:
    """A smooth random color image of a typical COCO size."""
    generator = np.random.default_rng(0)
    coarse = generator.integers(0, 255, (height // 32, width // 32, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((32, 32, 1), dtype=np.uint8))


def text_cache_process_seconds(preset: str, num_classes: int, cache_dir: str) -> tuple[float, int]:
    """A fresh process builds the benchmark model and embeds the first `num_classes` COCO classes; (seconds, calls)."""
    snippet = f"""
import sys, time
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from benchmark_inference import build, small_vocabulary
model, processor = build({preset!r})
calls = []
model.clip.text.register_forward_hook(lambda *args: calls.append(1))
text = processor.encode_vocabulary(small_vocabulary({num_classes}))
start = time.perf_counter()
model.get_text_embeddings(**text)
print(time.perf_counter() - start, len(calls))
"""
    env = {key: value for key, value in os.environ.items() if key != "POSSAM_NO_TEXT_CACHE"}
    env["POSSAM_TEXT_CACHE"] = cache_dir
    output = subprocess.run([sys.executable, "-c", snippet], check=True, capture_output=True, text=True, env=env).stdout
    seconds, calls = output.strip().splitlines()[-1].split()
    return float(seconds), int(calls)


def small_vocabulary(num_classes: int) -> Vocabulary:
    coco = load_vocabulary("coco_panoptic")
    return Vocabulary(class_names=coco.class_names[:num_classes], is_thing=coco.is_thing[:num_classes])


@torch.inference_mode()
def stage_times(model, processor, image, repeats: int, mask2former=None) -> tuple[dict, dict]:
    """Returns (per-round seconds of the interleaved calls, other measurements)."""
    vocabulary_150 = load_vocabulary("ade20k_150")
    text_150 = processor.encode_vocabulary(vocabulary_150)
    inputs = processor(images=[image])
    pixels = inputs["pixel_values"]
    text = model.get_text_embeddings(**text_150)

    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (model.config.image_mean, model.config.image_std))
    clip_pixels = model.clip.normalize_pixels(pixels * std + mean)  # as get_image_features does

    def post_process(outputs):
        return processor.image_processor.post_process_panoptic_segmentation(
            outputs, label_ids_to_fuse=vocabulary_150.stuff_label_ids, target_sizes=[image.shape[:2]]
        )

    clip_trunk = getattr(model.clip.vision, "trunk", None) or model.clip.vision.model.vision_model
    encoder_timer = ModuleTimer({"sam": model.sam, "clip": clip_trunk})

    def end_to_end():
        with encoder_timer.record():
            batch = processor(images=[image], text=vocabulary_150)
            result = model(**{k: v for k, v in batch.items() if k not in ("original_sizes", "reshaped_input_sizes")})
            post_process(result)

    stages = {"sam": model.sam, "clip_vision": clip_trunk, "fpn": model.fpn, "pixel_decoder": model.pixel_decoder,
              "transformer_decoder": model.transformer_decoder}
    with ActivationGuard(stages) as guard:
        end_to_end()
    assert set(guard.checked) == set(stages), f"activation check did not see {set(stages) - set(guard.checked)}"

    outputs = model(pixel_values=pixels, **text_150)
    features = model.get_image_features(pixels)
    pixel_output = model.pixel_decoder(list(model.fpn(features.sam_image_embeddings)))
    decoded = model.transformer_decoder(pixel_output.multi_scale_features, pixel_output.mask_features, full_resolution_masks=False)
    last = len(decoded.query_states) - 1

    functions = {
        "sam_encoder": lambda: model.sam(pixel_values=pixels),
        "clip_encoder": lambda: model.clip.vision.dense_features(clip_pixels),
        "fpn": lambda: model.fpn(features.sam_image_embeddings),
        "fpn_and_pixel_decoder": lambda: model.pixel_decoder(list(model.fpn(features.sam_image_embeddings))),
        "fpn_and_pixel_decoder_bf16_autocast": lambda: bf16_autocast(
            lambda: model.pixel_decoder(list(model.fpn(features.sam_image_embeddings)))
        ),
        "transformer_decoder": lambda: model.transformer_decoder(
            pixel_output.multi_scale_features, pixel_output.mask_features, full_resolution_masks=False
        ),
        "ldp_iou_and_classifiers": lambda: model._predict(
            decoded, last, ResizedMaskFeatures(decoded.mask_features), features.clip_image_features, text
        ),
        "post_processing_panoptic": lambda: post_process(outputs),
        "float32_matmul_4096": matmul_4096,
        "end_to_end": end_to_end,
    }
    if mask2former is not None:
        peer, peer_processor = mask2former
        peer_image = image  # the same photo; its processor resizes it to the peer's square input

        def peer_end_to_end():
            batch = peer_processor(images=[peer_image], return_tensors="pt")
            result = peer(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"])
            peer_processor.post_process_panoptic_segmentation(result, target_sizes=[image.shape[:2]])

        with ActivationGuard({"mask2former_backbone": peer.model.pixel_level_module.encoder}) as guard:
            peer_end_to_end()
        assert guard.checked, "activation check did not see the Mask2Former backbone"
        functions["mask2former_end_to_end"] = peer_end_to_end
    rounds = interleaved_seconds(functions, repeats=repeats)
    # The encoders' share of each timed end-to-end call (the last `repeats` recorded; the first were warm-up).
    rounds["encoders_within_end_to_end"] = [call["sam"] + call["clip"] for call in encoder_timer.calls[-repeats:]]
    encoder_timer.remove()

    calls = []
    hook = model.clip.text.register_forward_hook(lambda *args: calls.append(1))
    model(image_features=features, **text_150)
    hook.remove()
    return rounds, {"text_tower_calls_when_cached": len(calls),
                    "fpn_and_pixel_decoder_gflop": fpn_and_pixel_decoder_gflop(model, features.sam_image_embeddings)}


def bf16_autocast(function):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return function()


def matmul_4096(operands=(torch.randn(4096, 4096), torch.randn(4096, 4096))):
    """One float32 4096^3 matrix product: this machine's matmul rate, timed in the same rounds as the stages."""
    return operands[0] @ operands[1]


def fpn_and_pixel_decoder_gflop(model, sam_image_embeddings) -> float:
    """Multiply-add FLOPs (x2) of FPN + pixel decoder's convolutions and matrix products."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.pixel_decoder(list(model.fpn(sam_image_embeddings)))
    return counter.get_total_flops() / 1e9


@torch.inference_mode()
def full_extras(model, processor, image, preset: str, repeats: int) -> dict:
    """The slow measurements (minutes each on a CPU): 847 classes, batch of 4, eager SAM, peak RSS."""
    text_150 = processor.encode_vocabulary(load_vocabulary("ade20k_150"))
    text_847 = processor.encode_vocabulary(load_vocabulary("ade20k_847"))
    pixels = processor(images=[image])["pixel_values"]
    features = model.get_image_features(pixels)
    forward = lambda text_inputs: model(image_features=features, **text_inputs)
    forward(text_847)  # embeds the 847-class vocabulary once
    times = {
        name: statistics.median(values)
        for name, values in interleaved_seconds(
            {"heads_from_cached_features_150_classes": lambda: forward(text_150),
             "heads_from_cached_features_847_classes": lambda: forward(text_847)},
            repeats=repeats,
        ).items()
    }
    four = torch.cat([pixels] * 4)
    times["batch_of_4"] = median_seconds(lambda: model(pixel_values=four, **text_150), warmup=0, repeats=1)
    times["4_single_calls"] = median_seconds(lambda: [model(pixel_values=pixels, **text_150) for _ in range(4)], warmup=0, repeats=1)
    eager_model, _ = build(preset, "eager")
    times["sam_encoder_eager"] = median_seconds(lambda: eager_model.sam(pixel_values=pixels), repeats=repeats)
    times["sam_encoder_sdpa"] = median_seconds(lambda: model.sam(pixel_values=pixels), repeats=repeats)
    return times


@torch.inference_mode()
def compile_times(model, processor, image, repeats: int) -> dict:
    """Cold compile time of PosSAM's heavy stages and their compiled vs eager time, interleaved.

    Inductor keeps compiled graphs and kernels on disk (`/tmp/torchinductor_$USER`), so a second run of this script
    would time a cache hit (10 s against 134 s on 2 cores); here its caches go to a fresh directory, as for a user's
    first compilation.
    """
    pixels = processor(images=[image])["pixel_values"]
    features = model.get_image_features(pixels)
    embeddings = features.sam_image_embeddings
    eager = lambda: model.pixel_decoder.forward(list(model.fpn.forward(embeddings)))
    compiled = lambda: model.pixel_decoder(list(model.fpn(embeddings)))
    with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": cache}):
        model.compile_stages()
        start = time.perf_counter()
        compiled()
        compile_seconds = time.perf_counter() - start
        rounds = interleaved_seconds(
            {"fpn_and_pixel_decoder_eager": eager, "fpn_and_pixel_decoder_compiled": compiled}, repeats=repeats
        )
    return {"compile_seconds_fpn_and_pixel_decoder": compile_seconds, **{k: statistics.median(v) for k, v in rounds.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base", choices=("tiny", "base", "large", "huge"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of PosSAM's heavy stages")
    parser.add_argument("--full", action="store_true", help="also the slow extras (847 classes, batch of 4, eager SAM, peak RSS)")
    parser.add_argument("--no-peer", action="store_true", help="skip the Mask2Former peer")
    parser.add_argument("--text-cache-classes", type=int, default=150,
                        help="COCO classes embedded by the first- and second-process text-cache measurement")
    parser.add_argument("--output-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_only:  # a fresh process doing one batch-1 inference; prints its peak RSS
        from common import peak_rss_gib

        model, processor = build(args.preset)
        with torch.inference_mode():
            batch = processor(images=[test_image()], text=load_vocabulary("ade20k_150"))
            outputs = model(**{k: v for k, v in batch.items() if k not in ("original_sizes", "reshaped_input_sizes")})
            processor.image_processor.post_process_panoptic_segmentation(outputs, target_sizes=[(480, 640)])
        print(peak_rss_gib())
        return 0

    model, processor = build(args.preset)
    peer = None if args.no_peer else build_mask2former(model.config.image_size)
    rounds, other = stage_times(model, processor, test_image(), args.repeats, peer)
    times = {name: statistics.median(values) for name, values in rounds.items()}

    encoders = lambda r: r["sam_encoder"] + r["clip_encoder"]
    round_dicts = [dict(zip(rounds, values)) for values in zip(*rounds.values())]
    # The target's measure: within each end-to-end call, everything but the two encoders over the two encoders.
    own_share = [(r["end_to_end"] - r["encoders_within_end_to_end"]) / r["encoders_within_end_to_end"] for r in round_dicts]
    # The same with the encoders timed in their own calls of the same round (mixes two machine states; see ModuleTimer).
    own_share_separate = [(r["end_to_end"] - encoders(r)) / encoders(r) for r in round_dicts]
    post_share = [r["post_processing_panoptic"] / r["end_to_end"] for r in round_dicts]
    # The time FPN + pixel decoder's arithmetic alone needs at the matmul rate measured in the same round.
    floors = [other["fpn_and_pixel_decoder_gflop"] * r["float32_matmul_4096"] / (2 * 4096**3 / 1e9) for r in round_dicts]
    other["matmul_gflop_per_second"] = 2 * 4096**3 / 1e9 / times["float32_matmul_4096"]
    other["fpn_and_pixel_decoder_arithmetic_floor_seconds"] = statistics.median(floors)
    ratios = {
        "own_stages_over_encoders": statistics.median(own_share),
        "own_stages_over_encoders_per_round": own_share,
        "own_stages_over_separately_timed_encoders": statistics.median(own_share_separate),
        "own_stages_over_separately_timed_encoders_per_round": own_share_separate,
        "post_processing_share_of_end_to_end": statistics.median(post_share),
    }
    rows = [(f"{name} (s)", f"{value:.3f}", "", "") for name, value in times.items()]
    rows += [
        ("PosSAM's own stages / (SAM + CLIP encoders), both timed within each end-to-end call, median (min-max)",
         f"{ratios['own_stages_over_encoders']:.1%} ({spread(own_share)})", "<= 20%", verdict(max(own_share) <= 0.20)),
        ("same, end-to-end minus the encoders timed in their own calls of the round, median (min-max)",
         f"{ratios['own_stages_over_separately_timed_encoders']:.1%} ({spread(own_share_separate)})", "", ""),
        ("FPN + pixel decoder (s)", f"{times['fpn_and_pixel_decoder']:.2f}", "<= 2.0 on 2 idle cores",
         verdict(times["fpn_and_pixel_decoder"] <= 2.0)),
        ("FPN + pixel decoder: convolution and matmul GFLOP / this machine's float32 matmul GFLOP/s (4096^3, same "
         "rounds) = arithmetic floor (s)", f"{other['fpn_and_pixel_decoder_gflop']:.0f} / {other['matmul_gflop_per_second']:.0f} = "
         f"{other['fpn_and_pixel_decoder_arithmetic_floor_seconds']:.2f} ({spread(floors, '{:.2f}')})", "", ""),
        ("FPN + pixel decoder under CPU bfloat16 autocast (s)", f"{times['fpn_and_pixel_decoder_bf16_autocast']:.2f}", "", ""),
        ("post-processing / end-to-end", f"{ratios['post_processing_share_of_end_to_end']:.1%} ({spread(post_share)})", "<= 3%",
         verdict(max(post_share) <= 0.03)),
        ("text-tower calls for a cached vocabulary", str(other["text_tower_calls_when_cached"]), "0",
         verdict(other["text_tower_calls_when_cached"] == 0)),
    ]
    if peer is not None:
        peer_ratio = [r["end_to_end"] / r["mask2former_end_to_end"] for r in round_dicts]
        ratios["possam_over_mask2former_end_to_end"] = statistics.median(peer_ratio)
        rows.append((f"PosSAM ({args.preset}) end-to-end / Mask2Former (Swin-T, 250 queries) end-to-end",
                     f"{statistics.median(peer_ratio):.2f}x ({spread(peer_ratio, '{:.2f}x')})", "", ""))

    with tempfile.TemporaryDirectory() as cache_dir:
        first = text_cache_process_seconds(args.preset, args.text_cache_classes, cache_dir)
        second = text_cache_process_seconds(args.preset, args.text_cache_classes, cache_dir)
    times["text_embedding_first_process"], times["text_embedding_second_process"] = first[0], second[0]
    other["text_tower_calls_first_process"], other["text_tower_calls_second_process"] = first[1], second[1]
    rows += [
        (f"text embedding of {args.text_cache_classes} COCO classes, first process (s)", f"{first[0]:.2f}", "", ""),
        (f"same, second process, disk cache (s)", f"{second[0]:.3f}", "", ""),
        ("text-tower calls in the second process", str(second[1]), "0", verdict(second[1] == 0)),
    ]

    if args.compile:
        compiled = compile_times(model, processor, test_image(), args.repeats)
        times.update(compiled)
        rows += [
            ("torch.compile of FPN + pixel decoder, first call, empty compile cache (s)", f"{compiled['compile_seconds_fpn_and_pixel_decoder']:.1f}", "", ""),
            ("FPN + pixel decoder, compiled / eager", f"{compiled['fpn_and_pixel_decoder_compiled'] / compiled['fpn_and_pixel_decoder_eager']:.3f}", "", ""),
        ]
    if args.full:
        extras = full_extras(model, processor, test_image(), args.preset, args.repeats)
        times.update(extras)
        rss = peak_rss_of([__file__, "--preset", args.preset, "--rss-only"])
        other["peak_rss_gib"] = rss
        ratio_847 = extras["heads_from_cached_features_847_classes"] / extras["heads_from_cached_features_150_classes"]
        rows += [
            ("847 / 150 classes, cached", f"{ratio_847:.3f}", "<= 1.05", verdict(ratio_847 <= 1.05)),
            ("batch of 4 / 4 single calls", f"{extras['batch_of_4'] / extras['4_single_calls']:.3f}", "", ""),
            ("SDPA / eager (SAM encoder)", f"{extras['sam_encoder_sdpa'] / extras['sam_encoder_eager']:.3f}", "", ""),
            ("peak RSS, batch-1 inference (GiB)", f"{rss:.2f}", "<= 5", verdict(rss <= 5.0)),
        ]
    write_report(f"inference_{args.preset}",
                 {"preset": args.preset, "repeats": args.repeats, "seconds": times, "rounds": rounds, "ratios": ratios, **other},
                 rows, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
