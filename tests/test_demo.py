"""`possam demo` end to end with tiny settings: the open-vocabulary flow, its files and its summary."""

import json
import os
import subprocess
import sys

from PIL import Image


def test_demo_trains_on_seen_classes_and_reports_seen_and_unseen_pq(tmp_path):
    out = tmp_path / "possam-demo"
    command = [sys.executable, "-m", "possam", "demo", "--output_dir", str(out), "--steps", "2", "--clip_steps", "2",
               "--num_train_images", "4", "--num_eval_images", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.load(open(out / "summary.json"))
    for key in ("pq_seen", "pq_unseen"):
        assert 0.0 <= summary[key] <= 100.0 and summary[key] == summary["after_training"][key]
    assert set(summary["before_training"]) == {"pq", "pq_seen", "pq_unseen", "pq_things", "pq_stuff"}
    assert summary["clip"]["reused"] is False and summary["clip"]["arguments"]["steps"] == 2
    assert f"unseen classes (never labelled in training): {summary['before_training']['pq_unseen']}" in result.stdout

    # Training labels name only the seen classes; the saved model knows them as its training vocabulary.
    categories = json.load(open(out / "data" / "train" / "panoptic.json"))["categories"]
    assert len(categories) == 12 and "orange" not in {c["name"] for c in categories}
    config = json.load(open(out / "model" / "config.json"))
    assert len(config["training_vocabulary"]) == 12
    # Held-out scenes and their overlays are 384 px; every class of the world was offered.
    overlays = sorted(name for name in os.listdir(out / "predictions") if name.endswith("_overlay.png"))
    assert len(overlays) == 4 and all(Image.open(out / "predictions" / name).size == (384, 384) for name in overlays)
    assert "'ball|sphere,box|cube|crate,kite" in result.stdout and "water|sea" in result.stdout
    assert not [root for root, folders, files in os.walk(out) if not folders and not files]  # no empty folders

    # A second run re-uses the pretrained CLIP.
    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and json.load(open(out / "summary.json"))["clip"]["reused"] is True
