"""`from_pretrained(device_map="auto")` with a memory budget smaller than the model offloads weights to disk, and the
offloaded model computes exactly what the model in memory computes."""

from __future__ import annotations

import pytest
import torch
from conftest import make_pixels, make_vocabulary, tiny_model

from possam import PosSamModel


OUTPUT_KEYS = ("class_queries_logits", "masks_queries_logits", "iou_scores", "clip_logits")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny_model().eval()
    vocabulary = make_vocabulary(3)
    model.set_default_vocabulary(["a,b", "c,d", "e,f"], [True, False, True], **vocabulary)
    folder = tmp_path_factory.mktemp("tiny_possam")
    model.save_pretrained(folder)
    return model, folder, vocabulary


@pytest.mark.parametrize("budget", ["auto_smaller_than_the_model", "cpu_and_disk"])
def test_offloaded_model_computes_what_the_model_in_memory_computes(saved, tmp_path, budget):
    model, folder, vocabulary = saved
    model_bytes = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
    if budget == "auto_smaller_than_the_model":
        kwargs = {"device_map": "auto", "max_memory": {"cpu": model_bytes // 3}}
    else:
        placement = {name: "cpu" for name, _ in model.named_children()}
        placement.update({"clip": "disk", "transformer_decoder": "disk", "ldp": "disk", "text_classifier": "disk"})
        kwargs = {"device_map": placement}
    offloaded = PosSamModel.from_pretrained(folder, offload_folder=str(tmp_path / "offload"), **kwargs)
    assert "disk" in set(offloaded.hf_device_map.values())
    assert any(parameter.device.type == "meta" for parameter in offloaded.parameters())
    pixels = make_pixels(2)
    with torch.no_grad():
        for inputs in (vocabulary, {}):  # an explicit vocabulary, then the stored default one
            expected, actual = model(pixel_values=pixels, **inputs), offloaded(pixel_values=pixels, **inputs)
            for key in OUTPUT_KEYS:
                torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)
