"""Inference benchmark: time per stage, end-to-end pipeline time, memory, and the ratios PosSAM targets.

    python benchmarks/benchmark_inference.py --preset base --image-size 1024 --repeats 3

Random weights (no download): timings depend on shapes, not values. Prints a markdown table and writes
`benchmarks/results/inference_<preset>.{json,md}`. Targets (PosSAM-B, 1024x1024, CPU):

- PosSAM-specific overhead (end-to-end minus the frozen SAM and CLIP image encoders) <= 30% of the encoders;
- post-processing <= 3% of end-to-end; a cached vocabulary runs the text tower 0 times;
- an 847-class vocabulary costs <= 5% more than a 150-class one once cached;
- peak RSS <= 5 GiB for inference at batch 1 (measured in a fresh process).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved_median_seconds, median_seconds, peak_rss_of, verdict, write_report  # noqa: E402

from possam import PosSamModel, possam_preset  # noqa: E402
from possam.decoder import ResizedMaskFeatures  # noqa: E402
from possam.configuration import load_vocabulary  # noqa: E402
from possam.processing import PosSamProcessor  # noqa: E402


def build(preset: str, attn_implementation: str = "sdpa"):
    config = possam_preset(preset)
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    model = PosSamModel(config).eval()
    return model, PosSamProcessor.for_model_config(config)


def test_image(height: int = 480, width: int = 640) -> np.ndarray:
    """A smooth random color image of a typical COCO size."""
    generator = np.random.default_rng(0)
    coarse = generator.integers(0, 255, (height // 32, width // 32, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((32, 32, 1), dtype=np.uint8))


@torch.inference_mode()
def stage_times(model, processor, image, repeats: int) -> dict:
    vocabulary_150, vocabulary_847 = load_vocabulary("ade20k_150"), load_vocabulary("ade20k_847")
    text_150, text_847 = processor.encode_vocabulary(vocabulary_150), processor.encode_vocabulary(vocabulary_847)
    inputs = processor(images=[image])
    pixels = inputs["pixel_values"]

    def text_first_call():
        model.text_classifier.clear_cache()
        model.get_text_embeddings(**text_150)

    times = {"preprocess": median_seconds(lambda: processor(images=[image]), repeats=repeats)}
    # Minutes for a large vocabulary on a CPU, and by definition not repeated in use: timed once.
    times["text_encoding_first_call"] = median_seconds(text_first_call, warmup=0, repeats=1)
    text = model.get_text_embeddings(**text_150)

    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (model.config.image_mean, model.config.image_std))
    clip_pixels = model.clip.normalize_pixels(pixels * std + mean)  # as get_image_features does
    outputs = model(pixel_values=pixels, **text_150)
    post_process = lambda: processor.image_processor.post_process_panoptic_segmentation(
        outputs, label_ids_to_fuse=vocabulary_150.stuff_label_ids, target_sizes=[image.shape[:2]]
    )

    def end_to_end():
        batch = processor(images=[image], text=vocabulary_150)
        result = model(**{k: v for k, v in batch.items() if k not in ("original_sizes", "reshaped_input_sizes")})
        processor.image_processor.post_process_panoptic_segmentation(
            result, label_ids_to_fuse=vocabulary_150.stuff_label_ids, target_sizes=[image.shape[:2]]
        )

    # The overhead and post-processing ratios compare these four: measured in the same rounds.
    times.update(
        interleaved_median_seconds(
            {
                "sam_encoder": lambda: model.sam(pixel_values=pixels),
                "clip_encoder": lambda: model.clip.vision.dense_features(clip_pixels),
                "post_processing_panoptic": post_process,
                "end_to_end": end_to_end,
            },
            repeats=repeats,
        )
    )

    features = model.get_image_features(pixels)
    pyramid = model.fpn(features.sam_image_embeddings)
    times["fpn_and_pixel_decoder"] = median_seconds(lambda: model.pixel_decoder(list(model.fpn(features.sam_image_embeddings))), repeats=repeats)
    pixel_output = model.pixel_decoder(list(pyramid))
    run_decoder = lambda full: model.transformer_decoder(pixel_output.multi_scale_features, pixel_output.mask_features, full_resolution_masks=full)
    times.update(
        interleaved_median_seconds(
            {
                "transformer_decoder": lambda: run_decoder(False),
                "transformer_decoder_all_masks_full_resolution": lambda: run_decoder(True),
            },
            repeats=repeats,
        )
    )
    decoded = run_decoder(False)
    last = len(decoded.query_states) - 1
    low_resolution = ResizedMaskFeatures(decoded.mask_features)
    times["ldp_iou_and_classifiers"] = median_seconds(
        lambda: model._predict(decoded, last, low_resolution, features.clip_image_features, text), repeats=repeats
    )

    forward = lambda text_inputs: model(image_features=features, **text_inputs)
    forward(text_847)  # embeds the 847-class vocabulary once; from here on both vocabularies are cached
    calls = []
    hook = model.clip.text.register_forward_hook(lambda *args: calls.append(1))
    times.update(
        interleaved_median_seconds(
            {
                "heads_from_cached_features_150_classes": lambda: forward(text_150),
                "heads_from_cached_features_847_classes": lambda: forward(text_847),
            },
            repeats=repeats,
        )
    )
    hook.remove()
    text_tower_calls_when_cached = len(calls)

    four = torch.cat([pixels] * 4)
    times["batch_of_4"] = median_seconds(lambda: model(pixel_values=four, **text_150), warmup=0, repeats=1)
    times["4_single_calls"] = median_seconds(lambda: [model(pixel_values=pixels, **text_150) for _ in range(4)], warmup=0, repeats=1)
    return times, text_tower_calls_when_cached


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base", choices=("tiny", "base", "large", "huge"))
    parser.add_argument("--repeats", type=int, default=3)
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
    times, cached_calls = stage_times(model, processor, test_image(), args.repeats)
    eager_model, _ = build(args.preset, "eager")
    pixels = processor(images=[test_image()])["pixel_values"]
    with torch.inference_mode():
        times["sam_encoder_eager"] = median_seconds(lambda: eager_model.sam(pixel_values=pixels), repeats=args.repeats)
    del eager_model
    rss = peak_rss_of([__file__, "--preset", args.preset, "--rss-only"])

    backbones = times["sam_encoder"] + times["clip_encoder"]
    overhead = (times["end_to_end"] - backbones) / backbones
    ratios = {
        "overhead_over_backbones": overhead,
        "post_processing_share_of_end_to_end": times["post_processing_panoptic"] / times["end_to_end"],
        "vocabulary_847_over_150_cached": times["heads_from_cached_features_847_classes"] / times["heads_from_cached_features_150_classes"],
        "text_first_call_over_cached_heads": times["text_encoding_first_call"] / times["heads_from_cached_features_150_classes"],
        "batch_of_4_over_4_single_calls": times["batch_of_4"] / times["4_single_calls"],
        "sdpa_over_eager_sam_encoder": times["sam_encoder"] / times["sam_encoder_eager"],
        "decoder_inference_path_over_all_masks_full_resolution": times["transformer_decoder"] / times["transformer_decoder_all_masks_full_resolution"],
    }
    rows = [(f"{name} (s)", f"{value:.3f}", "", "") for name, value in times.items()]
    rows += [
        ("PosSAM overhead / (SAM + CLIP encoders)", f"{overhead:.1%}", "<= 30%", verdict(overhead <= 0.30)),
        ("post-processing / end-to-end", f"{ratios['post_processing_share_of_end_to_end']:.1%}", "<= 3%",
         verdict(ratios["post_processing_share_of_end_to_end"] <= 0.03)),
        ("text-tower calls for a cached vocabulary", str(cached_calls), "0", verdict(cached_calls == 0)),
        ("847 / 150 classes, cached", f"{ratios['vocabulary_847_over_150_cached']:.3f}", "<= 1.05",
         verdict(ratios["vocabulary_847_over_150_cached"] <= 1.05)),
        ("first text encoding / cached heads", f"{ratios['text_first_call_over_cached_heads']:.1f}x", "", ""),
        ("batch of 4 / 4 single calls", f"{ratios['batch_of_4_over_4_single_calls']:.3f}", "", ""),
        ("SDPA / eager (SAM encoder)", f"{ratios['sdpa_over_eager_sam_encoder']:.3f}", "", ""),
        ("decoder: attention-resolution masks / all full-resolution", f"{ratios['decoder_inference_path_over_all_masks_full_resolution']:.3f}", "", ""),
        ("peak RSS, batch-1 inference (GiB)", f"{rss:.2f}", "<= 5", verdict(rss <= 5.0)),
    ]
    write_report(f"inference_{args.preset}", {"preset": args.preset, "seconds": times, "ratios": ratios, "peak_rss_gib": rss},
                 rows, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
