"""The committed base-preset benchmark results are whole, consistent, and what README's performance section shows."""

import json
import os

import pytest

RESULTS = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results")
README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _read(name):
    with open(os.path.join(RESULTS, name), encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.parametrize("name", ["inference_base", "training_base"])
def test_readme_shows_every_row_of_the_committed_table(name):
    with open(README, encoding="utf-8") as handle:
        readme = handle.read()
    rows = [line for line in _read(f"{name}.md").splitlines() if line.startswith("| ")]
    assert len(rows) >= 5  # the header and at least four measurements
    missing = [row for row in rows if row not in readme.splitlines()]
    assert not missing, f"README lacks these rows of benchmarks/results/{name}.md: {missing}"


def test_inference_table_is_the_json_measurements():
    report = json.loads(_read("inference_base.json"))
    table = _read("inference_base.md")
    assert report["repeats"] == 3 and all(len(values) == 3 for values in report["rounds"].values())
    for stage in ("sam_encoder", "clip_encoder", "fpn_and_pixel_decoder", "end_to_end", "mask2former_end_to_end"):
        assert f"| {stage} (s) | {report['seconds'][stage]:.3f} |" in table
    # The own-stage share is taken within each end-to-end call: (end-to-end - encoders timed inside it) / encoders.
    rounds = report["rounds"]
    per_round = sorted((e - c) / c for e, c in zip(rounds["end_to_end"], rounds["encoders_within_end_to_end"]))
    share = report["ratios"]["own_stages_over_encoders"]
    assert share == pytest.approx(per_round[1])
    title = "PosSAM's own stages / (SAM + CLIP encoders), both timed within each end-to-end call, median (min-max)"
    assert f"| {title} | {share:.1%} ({per_round[0]:.1%}-{per_round[-1]:.1%}) |" in table
    assert report["text_tower_calls_second_process"] == 0
    # --compile was part of the run.
    assert report["seconds"]["compile_seconds_fpn_and_pixel_decoder"] > 0


def test_training_table_is_the_json_measurements():
    report = json.loads(_read("training_base.json"))
    rounds = report["rounds"]
    per_round = sorted(b / c for b, c in zip(rounds["step_with_backbones"], rounds["step_with_cached_features"]))
    assert len(per_round) == 3 and report["speedup"] == pytest.approx(per_round[1])
    assert f"| speed-up from cached features (median of rounds; min-max) | {report['speedup']:.2f}x (" in _read("training_base.md")
    assert "aten::" in _read("training_base_profile.txt")
