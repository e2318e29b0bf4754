"""Model cards: the committed PosSAM-B/L/H cards carry exactly the paper's Table 1, marked as reported by the paper;
a trained checkpoint's card carries exactly its own measured results."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import yaml

from possam.cli import main as possam_main


CARDS = os.path.join(os.path.dirname(__file__), "..", "model_cards")
spec = importlib.util.spec_from_file_location("render_model_card", os.path.join(CARDS, "render_model_card.py"))
render_model_card = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render_model_card)


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.parametrize("preset,letter", [("base", "b"), ("large", "l"), ("huge", "h")])
def test_committed_paper_cards_are_current_and_report_table_1(preset, letter):
    with open(os.path.join(CARDS, f"possam-{letter}.md"), encoding="utf-8") as handle:
        committed = handle.read()
    assert committed == render_model_card.paper_card(preset), "re-run: python model_cards/render_model_card.py paper-cards"
    metadata = front_matter(committed)
    assert metadata["pipeline_tag"] == "image-segmentation" and metadata["library_name"] == "transformers"
    assert metadata["license"] == "apache-2.0" and metadata["base_model"][0] == f"facebook/sam-vit-{preset}"
    results = metadata["model-index"][0]["results"]
    for result, (setting, values) in zip(results, render_model_card.PAPER_RESULTS[preset].items()):
        assert result["source"]["name"].startswith("Reported by the PosSAM paper")
        assert [metric["value"] for metric in result["metrics"]] == list(values)
        assert all(metric["verified"] is False for metric in result["metrics"])
    assert "not reproduced" in committed and "No PosSAM weights are publicly available" in committed


def test_trained_checkpoint_card_reports_its_own_measurements(synthetic_splits, tmp_path):
    train, val = synthetic_splits["train"], synthetic_splits["val"]
    run = tmp_path / "run"
    assert possam_main([
        "train", "--preset", "tiny", "--output_dir", str(run), "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--train_annotations", train.json_path, "--train_images", train.image_dir, "--save_strategy", "no",
        "--report_to", "none", "--use_cpu", "--disable_tqdm", "true",
    ]) == 0
    metrics_path = tmp_path / "metrics.json"
    assert possam_main(["evaluate", "--model_name_or_path", str(run), "--eval_annotations", val.json_path,
                        "--eval_images", val.image_dir, "--output_json", str(metrics_path)]) == 0
    measured = json.loads(metrics_path.read_text())
    card_path = tmp_path / "README.md"
    render_model_card.main(["card", str(run), "--results", str(metrics_path), "--train-dataset", "synthetic shapes",
                            "--eval-dataset", "synthetic shapes val", "--out", str(card_path)])
    card = card_path.read_text()
    metadata = front_matter(card)
    result = metadata["model-index"][0]["results"][0]
    assert "source" not in result and result["dataset"]["name"] == "synthetic shapes val"
    expected = {name: round(measured[f"eval_{name.lower()}"], 2) for name in ("PQ", "SQ", "RQ", "mAP", "mIoU")
                if measured[f"eval_{name.lower()}"] == measured[f"eval_{name.lower()}"]}
    assert {metric["name"]: metric["value"] for metric in result["metrics"]} == expected
    assert "Reported by the PosSAM paper" not in card and "measured on this checkpoint" in card
    assert "2 steps, batch 2 per device" in card and "5 training classes" in card


def test_checkpoint_card_rejects_results_without_metrics(tmp_path):
    from possam import possam_preset

    possam_preset("tiny").save_pretrained(tmp_path / "model")
    (tmp_path / "bad.json").write_text(json.dumps({"train_loss": 1.0}))
    with pytest.raises(ValueError, match="holds no eval_pq"):
        render_model_card.checkpoint_card(str(tmp_path / "model"), str(tmp_path / "bad.json"), "m", "data", "val")
