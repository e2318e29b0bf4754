"""The README's runnable snippets (marked `<!-- readme-test -->`) run as written, against a tiny model saved where
`possam demo` saves its model, and print what they promise."""

from __future__ import annotations

import os
import re

import pytest
from conftest import tiny_model, tiny_processor

from possam.processing import embed_default_vocabulary
from possam.training import generate_synthetic_coco_panoptic


README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def readme_snippets() -> list[str]:
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    return re.findall(r"<!-- readme-test -->\n```python\n(.*?)```", text, flags=re.S)


def test_readme_has_runnable_snippets():
    assert len(readme_snippets()) == 4


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_readme_snippet_runs(index, tmp_path, monkeypatch, capsys):
    scenes = generate_synthetic_coco_panoptic(tmp_path / "possam-demo" / "data" / "scenes", num_images=2, seed=7)
    model, processor = tiny_model(), tiny_processor()
    embed_default_vocabulary(model, processor, scenes.vocabulary)
    model.config.training_vocabulary = scenes.vocabulary.entries  # as `possam demo` saves it
    model.save_pretrained(tmp_path / "possam-demo" / "model")
    processor.save_pretrained(tmp_path / "possam-demo" / "model")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_snippets()[index], f"README snippet {index}", "exec"), {})
    printed = capsys.readouterr().out
    expected = {
        0: ["(128, 128)"],
        1: ["torch.Size([128, 128])", "torch.Size([1, 10, 4])"],
        2: ["True\n", "torch.Size([1, 128, 128, 3])", "True ["],
        3: ["torch.Size([128, 128])", "torch.Size([1, 1, 3, 32, 32])"],
    }[index]
    assert all(text in printed for text in expected), printed
    if index == 1:  # every ensemble mode post-processed from the one forward pass
        assert all(re.search(rf"^{mode} \[", printed, flags=re.M) for mode in ("mase", "geometric", "ldp_only", "clip_only"))
