"""Promptable segmentation: SAM's prompt encoder + mask decoder inside PosSAM, checked against Meta's `SamPredictor`,
prompt masks named by the open vocabulary, cached image features, the processor and the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conversion_helpers import (
    SAM_ENCODER_KWARGS,
    import_sam_predictor,
    sam_checkpoint_state_dict,
    tiny_meta_sam,
    tiny_sam_image_encoder,
)
from transformers import AutoModel, pipeline

from possam import PosSamConfig, PosSamImageFeatures, PosSamModel, PosSamProcessor, possam_preset
from possam.checkpoint_io import load_checked
from possam.convert_sam import convert_sam_checkpoint


TOLERANCE = 1e-4
VOCABULARY = ["ball,sphere", "box", "sky"]
ORIGINAL_SIZE = (96, 128)  # (height, width) of the user's image; 128 is the tiny model's input side


@pytest.fixture(scope="module")
def meta_sam():
    return tiny_meta_sam(tiny_sam_image_encoder(seed=0), seed=0)


@pytest.fixture(scope="module")
def possam_on_meta_sam(meta_sam, tmp_path_factory):
    """A tiny PosSAM whose SAM (image encoder, prompt encoder, mask decoder) is the Meta checkpoint, converted."""
    path = tmp_path_factory.mktemp("sam") / "sam_vit_tiny.pth"
    state_dict = dict(meta_sam.state_dict())
    torch.save(state_dict, path)
    weights = convert_sam_checkpoint(path)
    config = possam_preset(
        "tiny",
        sam_vision_config=weights.vision_config.to_dict(),
        sam_prompt_encoder_config=weights.prompt_decoder.prompt_encoder_config.to_dict(),
        sam_mask_decoder_config=weights.prompt_decoder.mask_decoder_config.to_dict(),
    )
    torch.manual_seed(0)
    model = PosSamModel(config).eval()
    load_checked(model.sam, weights.vision_state_dict, str(path), "sam")
    load_checked(model.sam_prompt_decoder, weights.prompt_decoder.state_dict, str(path), "sam_prompt_decoder")
    return model


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (*ORIGINAL_SIZE, 3), dtype=np.uint8)


def meta_predictor(meta_sam, image):
    """Meta's `SamPredictor` on `image`, set through `set_torch_image` (its own resize uses torchvision); the image is
    already at the model's longest side, so no resizing is involved on either side."""
    predictor = import_sam_predictor()(meta_sam)
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    predictor.set_torch_image(pixels, ORIGINAL_SIZE)
    return predictor


PROMPTS = {
    "one point": {"points": [[40.0, 30.0]], "labels": [1], "box": None},
    "two points, one background": {"points": [[40.0, 30.0], [100.0, 70.0]], "labels": [1, 0], "box": None},
    "box": {"points": None, "labels": None, "box": [20.0, 10.0, 90.0, 80.0]},
    "box and point": {"points": [[50.0, 40.0]], "labels": [1], "box": [20.0, 10.0, 90.0, 80.0]},
}


@pytest.mark.parametrize("multimask_output", [True, False])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_prompt_masks_match_segment_anything_predictor(meta_sam, possam_on_meta_sam, image, prompt, multimask_output):
    model, spec = possam_on_meta_sam, PROMPTS[prompt]
    predictor = meta_predictor(meta_sam, image)
    with torch.no_grad():
        expected_masks, expected_iou, expected_low_res = predictor.predict(
            point_coords=None if spec["points"] is None else np.array(spec["points"]),
            point_labels=None if spec["labels"] is None else np.array(spec["labels"]),
            box=None if spec["box"] is None else np.array(spec["box"]),
            multimask_output=multimask_output,
            return_logits=True,
        )
    processor = PosSamProcessor.for_model_config(model.config)
    inputs = processor(
        images=image,
        text=VOCABULARY,
        input_points=None if spec["points"] is None else [[spec["points"]]],
        input_labels=None if spec["labels"] is None else [[spec["labels"]]],
        input_boxes=None if spec["box"] is None else [[spec["box"]]],
    )
    # PosSAM's pixels are Meta's (same normalization, same padding): the whole comparison is of the SAM path.
    torch.testing.assert_close(inputs["pixel_values"], predictor.model.preprocess(
        torch.from_numpy(image).permute(2, 0, 1)[None].float()), atol=1e-5, rtol=0)
    features = model.get_image_features(inputs["pixel_values"])
    # The image encoder's own parity (tests/test_conversion_sam.py); the prompt path is then compared from Meta's
    # embedding, so float noise of the encoder (~1e-5, thread-count dependent) does not blur the decoder's check.
    assert (features.sam_image_embeddings - predictor.features).abs().max() <= TOLERANCE
    features = PosSamImageFeatures(
        sam_image_embeddings=predictor.features, clip_image_features=features.clip_image_features
    )
    text = {key: inputs[key] for key in ("input_ids", "attention_mask", "prompt_to_synonym", "synonym_to_class")}
    prompts = {key: inputs[key] for key in ("input_points", "input_labels", "input_boxes") if key in inputs}
    output = model.segment_prompts(features, **prompts, **text, multimask_output=multimask_output)

    num_masks = 3 if multimask_output else 1
    assert output.pred_masks.shape == (1, 1, num_masks, 32, 32) and output.iou_scores.shape == (1, 1, num_masks)
    assert np.abs(expected_low_res).mean() > 0.1  # real-scale logits: a wrong mapping cannot hide
    assert (output.pred_masks[0, 0] - torch.from_numpy(expected_low_res)).abs().max() <= TOLERANCE
    assert (output.iou_scores[0, 0] - torch.from_numpy(expected_iou)).abs().max() <= TOLERANCE

    # Post-processing maps the best mask back to the original image exactly as Meta's `postprocess_masks`.
    result = processor.post_process_prompt_segmentation(
        output, VOCABULARY, target_sizes=inputs["original_sizes"], reshaped_input_sizes=inputs["reshaped_input_sizes"]
    )[0][0]
    best = int(np.argmax(expected_iou))
    assert result["mask_index"] == best and result["mask"].shape == ORIGINAL_SIZE
    expected_mask = torch.from_numpy(expected_masks[best])
    decided = expected_mask.abs() > 1e-3  # pixels whose logit is not within float noise of the threshold
    assert torch.equal(result["mask"][decided], (expected_mask > 0)[decided])
    assert decided.float().mean() > 0.99


def test_prompt_masks_are_named_over_the_vocabulary(possam_on_meta_sam, image):
    model = possam_on_meta_sam
    processor = PosSamProcessor.for_model_config(model.config)
    inputs = processor(images=image, text=VOCABULARY, input_points=[[[[40, 30]], [[100, 70]]]])
    features = model.get_image_features(inputs["pixel_values"])
    text = {key: inputs[key] for key in ("input_ids", "attention_mask", "prompt_to_synonym", "synonym_to_class")}
    output = model.segment_prompts(features, input_points=inputs["input_points"], **text)
    assert output.class_queries_logits.shape == (1, 2, 3, len(VOCABULARY) + 1)
    assert output.clip_logits.shape == (1, 2, 3, len(VOCABULARY))
    # The ensemble is post-processing, as for panoptic outputs: the single-classifier modes are checkable by hand.
    for mode in ("ldp_only", "clip_only", "mase"):
        results = processor.post_process_prompt_segmentation(
            output, VOCABULARY, target_sizes=inputs["original_sizes"], ensemble_mode=mode, config=model.config
        )[0]
        for prompt, result in enumerate(results):
            best = result["mask_index"]
            assert best == int(output.iou_scores[0, prompt].argmax())
            ldp = output.class_queries_logits[0, prompt, best]
            void = ldp.softmax(-1)[-1]
            if mode == "mase":
                assert result["label"] in ("ball", "box", "sky") and 0 < result["score"] <= 1 - float(void) + 1e-6
                continue
            logits = ldp[:-1] if mode == "ldp_only" else output.clip_logits[0, prompt, best]
            expected = logits.softmax(-1) * (1 - void)
            assert result["label"] == ["ball", "box", "sky"][int(expected.argmax())]
            assert result["score"] == pytest.approx(float(expected.max()), abs=1e-6)


def test_prompts_reuse_cached_features(possam_on_meta_sam, image):
    """A second click on the same image runs neither the encoders nor PosSAM's decoders: only SAM's mask decoder."""
    model = possam_on_meta_sam
    modules = ("sam", "fpn", "pixel_decoder", "transformer_decoder", "sam_prompt_decoder")
    calls = dict.fromkeys((*modules, "clip.vision"), 0)
    handles = [
        model.get_submodule(name).register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        for name in modules
    ]
    dense_features = model.clip.vision.dense_features  # CLIP's image tower is called through this method

    def counted_dense_features(*args, **kwargs):
        calls["clip.vision"] += 1
        return dense_features(*args, **kwargs)

    model.clip.vision.dense_features = counted_dense_features
    try:
        processor = PosSamProcessor.for_model_config(model.config)
        inputs = processor(images=image, text=VOCABULARY)
        text = {key: inputs[key] for key in ("input_ids", "attention_mask", "prompt_to_synonym", "synonym_to_class")}
        features = model.get_image_features(inputs["pixel_values"])
        first = model.segment_prompts(features, input_points=[[[[40.0, 30.0]]]], **text)
        assert calls == dict.fromkeys(calls, 1)
        second = model.segment_prompts(first.image_features, input_points=[[[[100.0, 70.0]]]], **text)
        assert calls == {**dict.fromkeys(calls, 1), "sam_prompt_decoder": 2}
        # The panoptic forward can hand over its decoder queries too: prompts after it run no decoder at all.
        panoptic = model(image_features=features, **text, output_image_features=True)
        assert calls["transformer_decoder"] == 2
        again = model.segment_prompts(panoptic.image_features, input_points=[[[[40.0, 30.0]]]], **text)
        assert calls["transformer_decoder"] == 2 and calls["sam"] == calls["clip.vision"] == 1
    finally:
        for handle in handles:
            handle.remove()
        del model.clip.vision.dense_features
    # Cached queries give the same answer as decoding afresh.
    torch.testing.assert_close(again.class_queries_logits, first.class_queries_logits)
    torch.testing.assert_close(again.clip_logits, first.clip_logits)
    assert not torch.equal(second.pred_masks, first.pred_masks)


def test_sam_prompt_decoder_is_frozen_and_saved(possam_on_meta_sam, tmp_path):
    model = possam_on_meta_sam
    assert all(not parameter.requires_grad for parameter in model.sam_prompt_decoder.parameters())
    model.train()
    assert not model.sam_prompt_decoder.training
    model.eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path)
    for key, value in model.sam_prompt_decoder.state_dict().items():
        assert torch.equal(reloaded.sam_prompt_decoder.state_dict()[key], value), key
    assert reloaded.config.sam_mask_decoder_config.num_attention_heads == 8


def test_configs_saved_before_prompts_existed_still_load():
    values = possam_preset("tiny").to_dict()
    del values["sam_prompt_encoder_config"], values["sam_mask_decoder_config"]
    config = PosSamConfig.from_dict(values)
    assert config.sam_prompt_encoder_config.hidden_size == config.sam_vision_config.output_channels == 32
    assert config.sam_prompt_encoder_config.image_size == 128
    assert config.sam_mask_decoder_config.hidden_size == 32
    with pytest.raises(Exception, match=r"sam_mask_decoder_config.hidden_size \(64\) must equal 32"):
        possam_preset("tiny", sam_mask_decoder_config={"hidden_size": 64})


def test_bad_prompts_fail_with_clear_messages(possam_on_meta_sam, image):
    model = possam_on_meta_sam
    processor = PosSamProcessor.for_model_config(model.config)
    features = model.get_image_features(processor(images=image)["pixel_values"])
    with pytest.raises(ValueError, match="needs input_points and/or input_boxes"):
        model.segment_prompts(features)
    with pytest.raises(ValueError, match=r"input_points must have shape \(batch=1, prompts, points_per_prompt, 2\)"):
        model.segment_prompts(features, input_points=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="got 2 point prompts and 1 boxes"):
        model.segment_prompts(features, input_points=torch.zeros(1, 2, 1, 2), input_boxes=torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match=r"input_boxes\[0\]\[0\] must be 4 numbers"):
        processor(images=image, input_boxes=[[[10, 10, 5]]])
    with pytest.raises(ValueError, match=r"input_labels\[0\]\[0\] must hold one label"):
        processor(images=image, input_points=[[[[1, 2]]]], input_labels=[[[2]]])
    with pytest.raises(ValueError, match="give their images too"):
        processor(text=VOCABULARY, input_points=[[[[1, 2]]]])


def test_pipeline_segments_points_and_boxes(possam_on_meta_sam, image, tmp_path):
    model = possam_on_meta_sam
    model.save_pretrained(tmp_path)
    PosSamProcessor.for_model_config(model.config).save_pretrained(tmp_path)
    segmenter = pipeline("open-vocab-panoptic", model=str(tmp_path))
    results = segmenter(
        image, candidate_labels=VOCABULARY, points=[(40, 30), (100, 70)], boxes=[(20, 10, 90, 80)]
    )
    assert [sorted(result) for result in results] == [["iou_score", "label", "mask", "score"]] * 3
    assert all(result["mask"].size == (ORIGINAL_SIZE[1], ORIGINAL_SIZE[0]) for result in results)
    assert all(result["label"] in ("ball", "box", "sky") for result in results)
    # Same masks as the processor + model path.
    processor = segmenter.processor
    inputs = processor(images=image, text=VOCABULARY, input_boxes=[[[20, 10, 90, 80]]])
    features = model.get_image_features(inputs["pixel_values"])
    text = {key: inputs[key] for key in ("input_ids", "attention_mask", "prompt_to_synonym", "synonym_to_class")}
    output = model.segment_prompts(features, input_boxes=inputs["input_boxes"], **text)
    expected = processor.post_process_prompt_segmentation(
        output, VOCABULARY, target_sizes=inputs["original_sizes"], reshaped_input_sizes=inputs["reshaped_input_sizes"]
    )[0][0]
    assert np.array_equal(np.array(results[2]["mask"]) > 0, expected["mask"].numpy())
    assert results[2]["label"] == expected["label"] and results[2]["score"] == pytest.approx(expected["score"])
    with pytest.raises(ValueError, match="points=.*one list of prompts per image"):
        segmenter([image, image], candidate_labels=VOCABULARY, points=[(1, 2)])
