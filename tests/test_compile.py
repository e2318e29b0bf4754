"""What `torch.compile` covers: every tensor-heavy stage traces into one graph, with no graph break.

The whole model also compiles (`torch.compile(model)`), but the vocabulary's class count, the empty-mask fallback of
mask pooling and post-processing depend on tensor values and split it into several graphs; README says so.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo

from conftest import make_pixels, make_vocabulary, tiny_model


@pytest.fixture(scope="module")
def stages():
    model = tiny_model().eval()
    pixels, vocabulary = make_pixels(1), make_vocabulary(3)
    with torch.no_grad():
        features = model.get_image_features(pixels)
        pyramid = list(model.fpn(features.sam_image_embeddings))
        pixel_output = model.pixel_decoder(pyramid)
    clip_pixels = torch.randn_like(pixels)  # the presets feed CLIP the SAM input size
    return {
        "sam": (model.sam, (pixels,)),
        "fpn": (model.fpn, (features.sam_image_embeddings,)),
        "pixel_decoder": (model.pixel_decoder, (pyramid,)),
        "transformer_decoder": (
            model.transformer_decoder,
            (pixel_output.multi_scale_features, pixel_output.mask_features, False),
        ),
        "clip_vision": (model.clip.vision.dense_features, (clip_pixels,)),
        "clip_text": (model.clip.text, (vocabulary["input_ids"], vocabulary["attention_mask"])),
    }


@pytest.mark.parametrize("stage", ["sam", "fpn", "pixel_decoder", "transformer_decoder", "clip_vision", "clip_text"])
def test_stage_traces_into_one_graph(stages, stage):
    module, arguments = stages[stage]
    dynamo.reset()
    with torch.no_grad():
        explanation = dynamo.explain(module)(*arguments)
    assert explanation.graph_break_count == 0, [str(reason.reason) for reason in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_compile_stages_compiles_in_place_and_keeps_outputs():
    model = tiny_model().eval()
    embeddings = torch.randn(1, model.config.sam_vision_config.output_channels, 8, 8)
    with torch.no_grad():
        expected = model.fpn(embeddings)
        model.compile_stages(stages=("fpn",))
        assert model.fpn._compiled_call_impl is not None and model.pixel_decoder._compiled_call_impl is None
        compiled = model.fpn(embeddings)
    for ours, reference in zip(compiled, expected):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_predict_compile_flag_compiles_the_stages(tmp_path, monkeypatch):
    import numpy as np
    import PIL.Image

    from conftest import tiny_processor
    from possam import PosSamModel
    from possam.processing.predict_cli import main

    checkpoint = tmp_path / "model"
    tiny_model().save_pretrained(checkpoint)
    tiny_processor().save_pretrained(checkpoint)
    image = tmp_path / "photo.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(image)
    compiled = []
    monkeypatch.setattr(PosSamModel, "compile_stages", lambda self, *args, **kwargs: compiled.append(type(self)))
    arguments = [str(image), "--model", str(checkpoint), "--labels", "cat,dog", "--out", str(tmp_path / "out")]
    assert main(arguments) == 0 and compiled == []
    assert main(arguments + ["--compile"]) == 0 and compiled == [PosSamModel]
