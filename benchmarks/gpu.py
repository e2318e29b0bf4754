"""GPU check, prepared for a machine with CUDA (none was available to this project's benchmarks so far).

    python benchmarks/gpu.py                 # on a CUDA machine: PosSAM-B shapes, fp32 and bf16
    python benchmarks/gpu.py --dry-run       # anywhere: tiny shapes on the CPU, proves the script runs

Times, interleaved in rounds (medians): PosSAM's multi-scale deformable attention against transformers' at the
pixel decoder's shapes (6 layers' worth: 21,504 tokens, 8 heads, 3 levels, 4 points), forward and forward+backward;
and the PosSAM-B stages (SAM, CLIP, FPN + pixel decoder, decoder) end to end, with realistic-magnitude weights.
Writes `benchmarks/results/gpu_<device>.{json,md}`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
from transformers.models.mask2former.modeling_mask2former import (
    multi_scale_deformable_attention as transformers_attention,
)

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved_seconds, variance_preserving_init_, write_report  # noqa: E402

from possam import PosSamModel, possam_preset  # noqa: E402
from possam.deformable_attention import multi_scale_deformable_attention  # noqa: E402


def synchronized(function, device):
    def call():
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return call


def attention_inputs(shapes, heads, head_dim, points, device, dtype):
    generator = torch.Generator().manual_seed(0)
    tokens = sum(height * width for height, width in shapes)
    value = torch.randn(1, tokens, heads, head_dim, generator=generator)
    locations = torch.rand(1, tokens, heads, len(shapes), points, 2, generator=generator)
    weights = torch.rand(1, tokens, heads, len(shapes), points, generator=generator).softmax(-1)
    return [tensor.to(device, dtype) for tensor in (value, locations, weights)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device; use --dry-run to check the script on a CPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    preset = "tiny" if args.dry_run else "base"
    shapes = [(8, 8), (4, 4), (2, 2)] if args.dry_run else [(128, 128), (64, 64), (32, 32)]
    dtypes = [torch.float32] if args.dry_run else [torch.float32, torch.bfloat16]

    functions = {}
    for dtype in dtypes:
        inputs = attention_inputs(shapes, 8, 32, 4, device, dtype)
        trainable = [tensor.clone().requires_grad_() for tensor in inputs]
        suffix = str(dtype).removeprefix("torch.")
        for name, attention in (("possam", multi_scale_deformable_attention), ("transformers", transformers_attention)):
            def forward(attention=attention, inputs=inputs):
                with torch.no_grad():
                    attention(inputs[0], shapes, *inputs[1:])

            def backward(attention=attention, inputs=trainable):
                attention(inputs[0], shapes, *inputs[1:]).sum().backward()

            functions[f"deformable_attention_{name}_forward_{suffix}"] = synchronized(forward, device)
            functions[f"deformable_attention_{name}_forward_backward_{suffix}"] = synchronized(backward, device)

    torch.manual_seed(0)
    model = PosSamModel(possam_preset(preset)).eval().to(device)
    variance_preserving_init_(model.sam, model.clip)
    size = model.config.image_size
    pixels = torch.randn(1, 3, size, size, device=device)
    with torch.no_grad():
        features = model.get_image_features(pixels)
        pyramid_input = features.sam_image_embeddings
    functions["sam_encoder"] = synchronized(torch.no_grad()(lambda: model.sam(pixel_values=pixels)), device)
    functions["fpn_and_pixel_decoder"] = synchronized(
        torch.no_grad()(lambda: model.pixel_decoder(list(model.fpn(pyramid_input)))), device
    )
    rounds = interleaved_seconds(functions, repeats=args.repeats)
    times = {name: statistics.median(values) for name, values in rounds.items()}
    rows = [(f"{name} (ms)", f"{1000 * value:.2f}", "", "") for name, value in times.items()]
    for dtype in dtypes:
        suffix = str(dtype).removeprefix("torch.")
        for kind in ("forward", "forward_backward"):
            ratio = times[f"deformable_attention_possam_{kind}_{suffix}"] / times[f"deformable_attention_transformers_{kind}_{suffix}"]
            rows.append((f"deformable attention {kind} {suffix}: PosSAM / transformers", f"{ratio:.3f}", "<= 1.0 on GPU", ""))
    device_name = "cpu-dry-run" if args.dry_run else torch.cuda.get_device_name(device).replace(" ", "_")
    write_report(f"gpu_{device_name}", {"device": device_name, "seconds": times, "rounds": rounds}, rows, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
