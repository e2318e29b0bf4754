"""Model cards: the committed PosSAM-B/L/H cards are what the package's renderer writes and carry exactly the paper's
Table 1, marked as reported by the paper; every saved folder gets a card that states only what the folder records
(random or pretrained towers, training, its own measured results)."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from possam import PosSamModel, possam_preset
from possam.cli import main as possam_main
from possam.model_card import MARKER, PAPER_RESULTS, describe_towers, paper_card


CARDS = os.path.join(os.path.dirname(__file__), "..", "model_cards")


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.parametrize("preset,letter", [("base", "b"), ("large", "l"), ("huge", "h")])
def test_committed_paper_cards_are_current_and_report_table_1(preset, letter):
    with open(os.path.join(CARDS, f"possam-{letter}.md"), encoding="utf-8") as handle:
        committed = handle.read()
    assert committed == paper_card(preset), "re-run: possam card --paper-cards model_cards"
    metadata = front_matter(committed)
    assert metadata["pipeline_tag"] == "image-segmentation" and metadata["library_name"] == "transformers"
    assert metadata["license"] == "apache-2.0" and metadata["base_model"][0] == f"facebook/sam-vit-{preset}"
    results = metadata["model-index"][0]["results"]
    for result, (setting, values) in zip(results, PAPER_RESULTS[preset].items()):
        assert result["source"]["name"].startswith("Reported by the PosSAM paper")
        assert [metric["value"] for metric in result["metrics"]] == list(values)
        assert all(metric["verified"] is False for metric in result["metrics"])
    assert "not reproduced" in committed and "No PosSAM weights are publicly available" in committed


def test_save_pretrained_writes_a_card_that_says_the_towers_are_random(tmp_path):
    model = PosSamModel(possam_preset("tiny"))
    model.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    metadata = front_matter(card)
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-segmentation"
    assert metadata["license"] == "apache-2.0" and "possam" in metadata["tags"]
    assert "base_model" not in metadata and "model-index" not in metadata
    assert "towers of this model are randomly initialized" in card and "has not been trained" in card
    frozen_parts = (model.sam, model.sam_prompt_decoder, model.clip)
    frozen = sum(p.numel() for part in frozen_parts for p in part.parameters())
    assert f"| frozen (SAM encoder and prompt decoder, CLIP) | {frozen:,} |" in card


def test_base_model_lists_only_hub_ids(tmp_path):
    config = possam_preset("tiny", sam_pretrained="facebook/sam-vit-base", clip_pretrained=str(tmp_path / "clip.bin"))
    text, base_models = describe_towers(config)
    assert base_models == ["facebook/sam-vit-base"]
    assert "huggingface.co/facebook/sam-vit-base" in text and "checkpoint `clip.bin`" in text
    assert describe_towers(possam_preset("tiny", sam_pretrained=str(tmp_path)))[1] == []


def test_a_readme_the_user_wrote_is_kept(tmp_path):
    (tmp_path / "README.md").write_text("# my own card\n")
    PosSamModel(possam_preset("tiny")).save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "# my own card\n"
    assert possam_main(["card", str(tmp_path)]) == 1
    assert possam_main(["card", str(tmp_path), "--force"]) == 0
    assert MARKER in (tmp_path / "README.md").read_text()


def test_trained_folder_card_reports_training_and_its_own_evaluation(synthetic_splits, tmp_path):
    train, val = synthetic_splits["train"], synthetic_splits["val"]
    run = tmp_path / "run"
    assert possam_main([
        "train", "--preset", "tiny", "--output_dir", str(run), "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--train_annotations", train.json_path, "--train_images", train.image_dir, "--save_strategy", "no",
        "--eval_annotations", val.json_path, "--eval_images", val.image_dir,
        "--report_to", "none", "--use_cpu", "--disable_tqdm", "true",
    ]) == 0
    measured = json.loads((run / "eval_results.json").read_text())
    card = (run / "README.md").read_text()
    result = front_matter(card)["model-index"][0]["results"][0]
    assert "source" not in result and result["dataset"]["name"] == os.path.basename(val.json_path)
    normalized = {key.lower().removeprefix("eval_"): value for key, value in measured.items()}
    expected = {name: round(normalized[key], 2) for name, key in (("PQ", "pq"), ("SQ", "sq"), ("RQ", "rq"),
                ("mAP", "map"), ("mIoU", "miou")) if normalized[key] == normalized[key]}
    assert expected and {metric["name"]: metric["value"] for metric in result["metrics"]} == expected
    assert "Reported by the PosSAM paper" not in card and "measured on this model" in card
    assert "2 steps, batch 2 per device" in card and "5 training classes" in card
    assert "randomly initialized" in card and "base_model" not in card


def test_possam_card_records_an_evaluation_and_rerenders(tmp_path):
    folder = tmp_path / "model"
    PosSamModel(possam_preset("tiny")).save_pretrained(folder)
    assert "model-index" not in front_matter((folder / "README.md").read_text())
    metrics = tmp_path / "ade.json"
    metrics.write_text(json.dumps({"eval_PQ": 12.345, "eval_SQ": 70.0, "eval_RQ": 15.0, "eval_mAP": float("nan"),
                                   "eval_mIoU": 20.5, "eval_PQ_th": 10.0}))
    assert possam_main(["card", str(folder), "--results", str(metrics), "--eval-dataset", "ADE20K val"]) == 0
    result = front_matter((folder / "README.md").read_text())["model-index"][0]["results"][0]
    assert result["dataset"]["name"] == "ADE20K val"
    assert {m["name"]: m["value"] for m in result["metrics"]} == {"PQ": 12.35, "SQ": 70.0, "RQ": 15.0, "mIoU": 20.5}
    # The results stay with the folder: a later save renders them again.
    PosSamModel.from_pretrained(folder).save_pretrained(folder)
    assert "model-index" in front_matter((folder / "README.md").read_text())


def test_possam_card_rejects_results_without_metrics(tmp_path, capsys):
    PosSamModel(possam_preset("tiny")).save_pretrained(tmp_path / "model")
    (tmp_path / "bad.json").write_text(json.dumps({"train_loss": 1.0}))
    assert possam_main(["card", str(tmp_path / "model"), "--results", str(tmp_path / "bad.json")]) == 1
    assert "holds no PQ" in capsys.readouterr().err
    assert possam_main(["card", str(tmp_path / "missing")]) == 1


def test_demo_model_has_a_card_with_its_measured_quality(tmp_path):
    out = tmp_path / "demo"
    assert possam_main(["demo", "--output_dir", str(out), "--steps", "2", "--clip_steps", "2",
                        "--num_train_images", "4", "--num_eval_images", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    card = (out / "model" / "README.md").read_text()
    metadata = front_matter(card)
    # The demo's towers are local folders (a toy CLIP, a random SAM): no Hub base model to name.
    assert "base_model" not in metadata
    metrics = {m["name"]: m["value"] for m in metadata["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"PQ": summary["after_training"]["pq"]}
