"""The committed open-vocabulary ablation has the promised shape, and the README shows exactly its numbers."""

import json
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _results():
    with open(os.path.join(ROOT, "benchmarks", "results", "open_vocabulary.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_results_cover_every_clip_ensemble_and_fusion_combination():
    rows = _results()["rows"]
    keys = {(r["clip"], r["ensemble_mode"], r["ldp_fusion"]) for r in rows}
    assert len(keys) == len(rows) == 2 * 4 * 2
    assert {k[0] for k in keys} == {"pretrained", "random"}
    assert {k[1] for k in keys} == {"mase", "geometric", "ldp_only", "clip_only"}
    assert {k[2] for k in keys} == {"self_attention", "none"}
    for row in rows:
        assert set(row) == {"clip", "ensemble_mode", "ldp_fusion", "pq", "pq_seen", "pq_unseen"}
        assert all(isinstance(row[name], float) and 0.0 <= row[name] <= 100.0 for name in ("pq", "pq_seen", "pq_unseen"))


def test_readme_table_is_the_committed_results():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    table = re.findall(r"^\| (pretrained|random) \| (\w+) \| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", readme, re.M)
    expected = [
        (r["clip"], r["ensemble_mode"], r["ldp_fusion"], str(r["pq"]), str(r["pq_seen"]), str(r["pq_unseen"]))
        for r in _results()["rows"]
    ]
    assert table == expected
