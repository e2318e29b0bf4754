"""The benchmarks' guards against timing the initialization instead of the model, and the prepared GPU script."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import SamVisionConfig, SamVisionModel

BENCHMARKS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")
sys.path.insert(0, BENCHMARKS)
from common import ActivationGuard, check_activations, variance_preserving_init_  # noqa: E402


def test_check_activations_rejects_denormals_collapse_and_nan():
    check_activations("fine", {"a": torch.randn(10), "ids": torch.arange(3)})
    for bad, what in ((torch.tensor([1.0, 1e-40]), "1 denormals"), (torch.full((4,), 1e-7), "largest"),
                      (torch.tensor([1.0, float("nan")]), "unrealistic")):
        with pytest.raises(RuntimeError, match=what):
            check_activations("stage", (bad,))


def test_variance_preserving_init_repairs_a_collapsed_sam_tower():
    # transformers' SamVisionConfig default initializer_range is 1e-10: the tower's output collapses.
    config = SamVisionConfig(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                             image_size=64, patch_size=16, mlp_dim=64, global_attn_indexes=[1], window_size=2)
    torch.manual_seed(0)
    tower = SamVisionModel(config).eval()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), pytest.raises(RuntimeError, match="sam output"):
        with ActivationGuard({"sam": tower}):
            tower(pixel_values=pixels)
    variance_preserving_init_(tower)
    with torch.no_grad(), ActivationGuard({"sam": tower}) as guard:
        output = tower(pixel_values=pixels).last_hidden_state
    assert guard.checked == ["sam"] and 0.1 < output.std() < 10


def test_gpu_script_dry_run(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "gpu.py"), "--dry-run", "--repeats", "1", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_cpu-dry-run.json").read_text())
    assert report["seconds"]["deformable_attention_possam_forward_float32"] > 0
    assert "deformable attention forward float32: PosSAM / transformers" in (tmp_path / "gpu_cpu-dry-run.md").read_text()


def test_inference_benchmark_reports_every_measurement(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "benchmark_inference.py"), "--preset", "tiny", "--repeats", "1",
         "--no-peer", "--text-cache-classes", "5", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "inference_tiny.json").read_text())
    stages = ("sam_encoder", "clip_encoder", "fpn", "fpn_and_pixel_decoder", "fpn_and_pixel_decoder_bf16_autocast",
              "transformer_decoder", "ldp_iou_and_classifiers", "post_processing_panoptic", "end_to_end")
    assert all(len(report["rounds"][stage]) == 1 and report["seconds"][stage] > 0 for stage in stages)
    assert report["text_tower_calls_when_cached"] == 0
    # The target's share: the encoders timed inside the same end-to-end call, which they are a part of.
    (end_to_end,), (encoders,) = report["rounds"]["end_to_end"], report["rounds"]["encoders_within_end_to_end"]
    assert 0 < encoders < end_to_end
    assert report["ratios"]["own_stages_over_encoders"] == pytest.approx((end_to_end - encoders) / encoders)
    separate = report["rounds"]["sam_encoder"][0] + report["rounds"]["clip_encoder"][0]
    assert report["ratios"]["own_stages_over_separately_timed_encoders"] == pytest.approx((end_to_end - separate) / separate)
    assert (report["text_tower_calls_first_process"], report["text_tower_calls_second_process"]) == (1, 0)
    # The arithmetic floor is the FLOP count over the matmul rate measured in the same round (one round here).
    assert report["fpn_and_pixel_decoder_gflop"] > 0 and report["matmul_gflop_per_second"] > 1
    assert report["fpn_and_pixel_decoder_arithmetic_floor_seconds"] == pytest.approx(
        report["fpn_and_pixel_decoder_gflop"] / report["matmul_gflop_per_second"]
    )
    assert report["seconds"]["float32_matmul_4096"] == pytest.approx(2 * 4096**3 / 1e9 / report["matmul_gflop_per_second"])
    table = (tmp_path / "inference_tiny.md").read_text()
    assert "| FPN + pixel decoder under CPU bfloat16 autocast (s) |" in table
    assert "| text-tower calls in the second process | 0 | 0 | yes |" in table
