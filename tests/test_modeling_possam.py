"""PosSamModel on the tiny preset: shapes, training, freezing, save/load, equivalences, caching, errors."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import IMAGE_SIZE, make_labels, make_pixels, make_vocabulary, tiny_model
from transformers import AutoModel

from possam import PosSamModel, possam_preset
from possam.processing.mase import ensemble_scores


MASK_SIZE = IMAGE_SIZE // 4


def trainable_parameters(model):
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def training_step(model, optimizer, vocabulary, pixels, masks, classes, seed):
    torch.manual_seed(seed)  # the matcher and the point losses sample random points
    output = model(pixel_values=pixels, mask_labels=masks, class_labels=classes, **vocabulary)
    optimizer.zero_grad()
    output.loss.backward()
    optimizer.step()
    return output


@pytest.mark.parametrize("batch_size,num_classes", [(1, 1), (2, 3), (3, 7)])
def test_output_shapes(model, batch_size, num_classes):
    output = model(pixel_values=make_pixels(batch_size), **make_vocabulary(num_classes))
    queries = model.config.num_queries
    assert output.class_queries_logits.shape == (batch_size, queries, num_classes + 1)
    assert output.masks_queries_logits.shape == (batch_size, queries, MASK_SIZE, MASK_SIZE)
    assert output.iou_scores.shape == (batch_size, queries)
    assert output.clip_logits.shape == (batch_size, queries, num_classes)
    probabilities, _ = ensemble_scores(output.class_queries_logits, output.clip_logits, output.iou_scores, model.config)
    assert probabilities.shape == (batch_size, queries, num_classes + 1)
    # Ensembled class probabilities are scaled by (1 - void), so each row (classes + void) sums to one.
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(batch_size, queries))
    assert ((output.iou_scores >= 0) & (output.iou_scores <= 1)).all()
    assert output.loss is None and output.auxiliary_predictions is None


def test_auxiliary_predictions_cover_every_decoder_layer(model):
    output = model(pixel_values=make_pixels(1), output_auxiliary_logits=True, **make_vocabulary(2))
    assert len(output.auxiliary_predictions) == model.config.decoder_layers - 1
    for prediction in output.auxiliary_predictions:
        assert prediction["class_queries_logits"].shape == (1, model.config.num_queries, 3)
        assert prediction["masks_queries_logits"].shape == (1, model.config.num_queries, MASK_SIZE, MASK_SIZE)


def test_loss_is_finite_and_decreases():
    model = tiny_model().train()
    vocabulary, pixels = make_vocabulary(3), make_pixels(2)
    masks, classes = make_labels(2, 3)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=1e-3)
    losses = [training_step(model, optimizer, vocabulary, pixels, masks, classes, seed=step).loss.item() for step in range(40)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.8 * losses[0], losses


def test_an_image_without_segments_is_supervised_towards_void():
    """A crop can hold no segment at all: every query of that image must learn void, and nothing else breaks."""
    model = tiny_model().train()
    masks, classes = make_labels(2, 3)
    masks[1], classes[1] = masks[1][:0], classes[1][:0]
    output = model(pixel_values=make_pixels(2), mask_labels=masks, class_labels=classes, **make_vocabulary(3))
    assert all(torch.isfinite(value) for value in output.loss_dict.values())
    output.loss.backward()
    gradient = model.transformer_decoder.queries_features.weight.grad
    assert gradient is not None and torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def test_loss_components_are_reported_for_every_prediction():
    model = tiny_model().train()
    masks, classes = make_labels(2, 3)
    output = model(pixel_values=make_pixels(2), mask_labels=masks, class_labels=classes, **make_vocabulary(3))
    names = ("loss_cross_entropy", "loss_mask", "loss_dice", "loss_iou")
    expected = set(names) | {f"{name}_{index}" for name in names for index in range(model.config.decoder_layers - 1)}
    assert set(output.loss_dict) == expected
    weights = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0, "loss_iou": 1.0}
    total = sum(weights[key if key in weights else key.rsplit("_", 1)[0]] * value for key, value in output.loss_dict.items())
    torch.testing.assert_close(output.loss, total)


def test_gradients_reach_every_trainable_parameter_and_no_frozen_one():
    model = tiny_model().train()
    vocabulary, pixels = make_vocabulary(3), make_pixels(2)
    masks, classes = make_labels(2, 3)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=1e-3)
    # LDP's output projection starts at zero, so the layers behind it get gradients from the second step on.
    for step in range(3):
        training_step(model, optimizer, vocabulary, pixels, masks, classes, seed=step)
    no_gradient = [name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert no_gradient == []
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(name.startswith(("sam.", "sam_prompt_decoder.", "clip.")) for name in frozen)
    assert all(not p.requires_grad and p.grad is None for p in [*model.sam.parameters(), *model.clip.parameters()])
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert not any(name.startswith(("sam.", "sam_prompt_decoder.", "clip.")) for name in trainable)


def test_frozen_towers_stay_in_eval_mode():
    model = tiny_model().train()
    assert model.training and model.fpn.training and model.transformer_decoder.training
    frozen_modules = [*model.sam.modules(), *model.sam_prompt_decoder.modules(), *model.clip.modules()]
    assert not any(module.training for module in frozen_modules)
    features = model.get_image_features(make_pixels(1))
    assert not features.sam_image_embeddings.requires_grad and not features.clip_image_features.requires_grad


def test_save_and_auto_load_give_identical_outputs_with_one_weights_file(model, tmp_path):
    vocabulary = make_vocabulary(4)
    model.set_default_vocabulary(["a,b", "c,d", "e,f", "g,h"], [True, True, False, False], **vocabulary)
    model.save_pretrained(tmp_path)
    weight_files = sorted(name for name in os.listdir(tmp_path) if name.endswith((".safetensors", ".bin")))
    assert weight_files == ["model.safetensors"]
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is PosSamModel
    pixels = make_pixels(2)
    for inputs in (vocabulary, {}):  # explicit vocabulary, then the stored default one
        expected, actual = model(pixel_values=pixels, **inputs), reloaded(pixel_values=pixels, **inputs)
        for key in ("class_queries_logits", "masks_queries_logits", "iou_scores", "clip_logits"):
            assert torch.equal(expected[key], actual[key]), key
    assert reloaded.config.vocabulary == ["a,b", "c,d", "e,f", "g,h"]
    assert reloaded(pixel_values=pixels).vocabulary_is_thing.tolist() == [[True, True, False, False]] * 2


def test_default_vocabulary_equals_passing_it_explicitly(model):
    vocabulary = make_vocabulary(4)
    model.set_default_vocabulary(["a,b", "c,d", "e,f", "g,h"], [True] * 4, **vocabulary)
    pixels = make_pixels(1)
    default, explicit = model(pixel_values=pixels), model(pixel_values=pixels, **vocabulary)
    for key in ("class_queries_logits", "clip_logits"):
        torch.testing.assert_close(default[key], explicit[key])


def test_model_without_default_vocabulary_embeddings_explains_what_to_do(model):
    with pytest.raises(ValueError, match="default vocabulary has no text embeddings"):
        model(pixel_values=make_pixels(1))


def test_batch_of_two_equals_two_single_calls(model):
    vocabulary, pixels = make_vocabulary(3), make_pixels(2)
    batched = model(pixel_values=pixels, **vocabulary)
    for index in range(2):
        single = model(pixel_values=pixels[index : index + 1], **vocabulary)
        for key in ("class_queries_logits", "masks_queries_logits", "iou_scores", "clip_logits"):
            torch.testing.assert_close(batched[key][index : index + 1], single[key], rtol=1e-4, atol=1e-5)


def test_sdpa_equals_eager():
    sdpa = tiny_model().eval()
    config = possam_preset("tiny")
    config._attn_implementation = "eager"
    eager = PosSamModel(config).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.sam.config._attn_implementation == "sdpa" and eager.sam.config._attn_implementation == "eager"
    assert eager.clip.text.config._attn_implementation == "eager"
    vocabulary, pixels = make_vocabulary(3), make_pixels(2)
    expected, actual = sdpa(pixel_values=pixels, **vocabulary), eager(pixel_values=pixels, **vocabulary)
    for key in ("class_queries_logits", "masks_queries_logits", "iou_scores", "clip_logits"):
        torch.testing.assert_close(expected[key], actual[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fusion", ["self_attention", "sum", "concat_mlp", "none"])
@pytest.mark.parametrize("iou_target_unmatched", ["zero", "ignore"])
def test_every_ldp_fusion_and_iou_target_mode_trains(fusion, iou_target_unmatched):
    model = tiny_model(ldp_fusion=fusion, iou_target_unmatched=iou_target_unmatched).train()
    vocabulary, pixels = make_vocabulary(3), make_pixels(2)
    masks, classes = make_labels(2, 3)
    before = {name: p.detach().clone() for name, p in model.ldp.named_parameters()}
    iou_before = {name: p.detach().clone() for name, p in model.iou_head.named_parameters()}
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=1e-3)
    losses = [training_step(model, optimizer, vocabulary, pixels, masks, classes, seed=step).loss.item() for step in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(not torch.equal(before[name], p) for name, p in model.ldp.named_parameters())
    assert all(not torch.equal(iou_before[name], p) for name, p in model.iou_head.named_parameters())


@pytest.mark.parametrize("fusion", ["self_attention", "sum", "concat_mlp"])
def test_ldp_starts_as_pure_clip(fusion):
    model = tiny_model(ldp_fusion=fusion)
    clip_stream = torch.randn(2, 5, model.config.ldp_hidden_size)
    pooled = torch.randn(2, 5, model.config.mask_feature_size)
    queries = torch.randn(2, 5, model.config.hidden_dim)
    torch.testing.assert_close(model.ldp(clip_stream, pooled, queries), clip_stream)


def test_iou_targets_ignore_unmatched_queries_only_in_ignore_mode():
    masks_logits = torch.full((1, 3, 4, 4), -1.0)
    masks_logits[0, 0, :2] = 1.0  # top half; the ground truth is the top quarter -> IoU 0.5
    labels = [torch.zeros(1, 16, 16)]
    labels[0][0, :4] = 1
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    for mode, unmatched_weight in (("zero", 1.0), ("ignore", 0.0)):
        criterion = tiny_model(iou_target_unmatched=mode).criterion
        segments, _ = criterion.at_mask_resolution(labels, None, masks_logits.shape[-2:])
        targets, weights = criterion.iou_targets(masks_logits, segments, indices)
        torch.testing.assert_close(targets, torch.tensor([[0.5, 0.0, 0.0]]))
        torch.testing.assert_close(weights, torch.tensor([[1.0, unmatched_weight, unmatched_weight]]))


def test_ignored_pixels_do_not_count_in_mask_losses():
    """A prediction wrong only on ignored pixels has the same loss as a perfect one."""
    criterion = tiny_model().criterion
    criterion.importance_sample_ratio = 0.0  # the same uniform points for both predictions
    target = torch.zeros(1, 16, 16)
    target[0, :8] = 1
    perfect = (target * 20 - 10).unsqueeze(0)
    wrong_in_ignored = perfect.clone()
    # Wrong from row 13 while rows 12+ are ignored: bilinear point sampling never mixes a wrong and a valid pixel.
    wrong_in_ignored[0, 0, 13:] = 10.0
    valid = torch.ones(1, 16, 16)
    valid[0, 12:] = 0
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    torch.manual_seed(0)
    expected = criterion.loss_masks(perfect, target[None], indices, num_masks=1.0, valid_mask=valid)
    torch.manual_seed(0)
    actual = criterion.loss_masks(wrong_in_ignored, target[None], indices, num_masks=1.0, valid_mask=valid)
    torch.manual_seed(0)
    unweighted = criterion.loss_masks(wrong_in_ignored, target[None], indices, num_masks=1.0)
    torch.testing.assert_close(actual, expected)
    # Unweighted, the 3 wrong rows (logit +10 on background, BCE ~10) dominate the mean over points.
    assert unweighted["loss_mask"] > expected["loss_mask"] + 1.0


@pytest.mark.parametrize("matches", [((0, 3), (1,)), ((), (2, 0)), ((), ())])
def test_mask_losses_from_recomputed_matched_masks_equal_those_from_all_masks(matches):
    """Matched masks recomputed from their embeddings (training's path) = the same rows of every query's masks: the
    same losses and the same gradients for the query embeddings and the features, with images that have no match."""
    from possam.decoder import mask_logits

    criterion = tiny_model().criterion
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(2, 5, 8, generator=generator, requires_grad=True)
    features = torch.randn(2, 8, 16, 16, generator=generator, requires_grad=True)
    labels = (torch.rand(2, 2, 64, 64, generator=generator) > 0.5).float()
    valid = (torch.rand(2, 64, 64, generator=generator) > 0.2).float()
    indices = [(torch.tensor(queries, dtype=torch.long), torch.arange(len(queries))) for queries in matches]

    def losses_and_gradients(**mask_source):
        torch.manual_seed(1)  # the same random points for both paths
        losses = criterion.loss_masks(mask_logits(embeddings, features), labels, indices, 2.0, valid, **mask_source)
        total = losses["loss_mask"] + losses["loss_dice"]
        return [losses["loss_mask"], losses["loss_dice"], *torch.autograd.grad(total, (embeddings, features))]

    full = losses_and_gradients()
    recomputed = losses_and_gradients(mask_embeddings=embeddings, mask_features=features)
    assert any(matches) == bool(full[2].abs().sum() > 0)
    for expected, actual in zip(full, recomputed, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_vocabulary_cache_runs_the_text_tower_once(model):
    calls = []
    model.clip.text.register_forward_hook(lambda module, args, output: calls.append(1))
    vocabulary, pixels = make_vocabulary(3), make_pixels(1)
    first = model.get_text_embeddings(**vocabulary)
    assert len(calls) == 1
    model(pixel_values=pixels, **vocabulary)
    again = model.get_text_embeddings(**vocabulary)
    assert len(calls) == 1
    assert torch.equal(first.synonym_embeddings, again.synonym_embeddings)
    model.get_text_embeddings(**make_vocabulary(3, seed=1))
    assert len(calls) == 2
    model.load_state_dict(model.state_dict())  # new weights invalidate the cache
    model.get_text_embeddings(**vocabulary)
    assert len(calls) == 3


def test_text_embeddings_are_normalized_template_averages(model):
    vocabulary = make_vocabulary(2, synonyms_per_class=1, templates=3)
    text = model.get_text_embeddings(**vocabulary)
    with torch.no_grad():
        prompts = torch.nn.functional.normalize(model.clip.encode_text(vocabulary["input_ids"], vocabulary["attention_mask"]), dim=-1)
    expected = torch.nn.functional.normalize(prompts.view(2, 3, -1).mean(1), dim=-1)
    torch.testing.assert_close(text.synonym_embeddings, expected, rtol=1e-5, atol=1e-6)


def test_class_logit_is_the_max_over_synonyms(model):
    region = torch.randn(1, 4, model.config.ldp_hidden_size)
    vocabulary = make_vocabulary(2, synonyms_per_class=3)
    text = model.get_text_embeddings(**vocabulary)
    logits = model.text_classifier(region, text)
    scale = model.text_classifier.logit_scale.exp()
    cosine = torch.nn.functional.normalize(region, dim=-1) @ text.synonym_embeddings.T
    torch.testing.assert_close(logits[..., 0], scale * cosine[..., :3].max(-1).values)
    torch.testing.assert_close(logits[..., 1], scale * cosine[..., 3:].max(-1).values)


def test_precomputed_image_features_and_text_embeddings_give_identical_outputs(model):
    pixels, vocabulary = make_pixels(2), make_vocabulary(3)
    reference = model(pixel_values=pixels, output_image_features=True, **vocabulary)
    sam_calls = []
    model.sam.register_forward_hook(lambda module, args, output: sam_calls.append(1))
    text = model.get_text_embeddings(**vocabulary)
    reused = model(image_features=reference.image_features, synonym_embeddings=text.synonym_embeddings, synonym_to_class=text.synonym_to_class)
    assert sam_calls == []
    for key in ("class_queries_logits", "masks_queries_logits", "iou_scores", "clip_logits"):
        assert torch.equal(reference[key], reused[key]), key


def test_inference_decoder_path_equals_full_resolution_path(model):
    features = model.get_image_features(make_pixels(2))
    with torch.no_grad():
        pixel_output = model.pixel_decoder(list(model.fpn(features.sam_image_embeddings)))
        fast = model.transformer_decoder(pixel_output.multi_scale_features, pixel_output.mask_features, full_resolution_masks=False)
        full = model.transformer_decoder(pixel_output.multi_scale_features, pixel_output.mask_features, full_resolution_masks=True)
    assert all(mask is None for mask in fast.masks_queries_logits[:-1])
    assert all(mask is not None for mask in full.masks_queries_logits)
    torch.testing.assert_close(fast.masks_queries_logits[-1], full.masks_queries_logits[-1])
    for fast_state, full_state in zip(fast.query_states, full.query_states):
        torch.testing.assert_close(fast_state, full_state)


def test_low_resolution_masks_equal_resized_full_masks():
    """What the attention masks and CLIP pooling rely on: q . resize(F) == resize(q . F) for bilinear resizing."""
    from possam.decoder import ResizedMaskFeatures, mask_logits

    queries, features = torch.randn(2, 5, 8, requires_grad=True), torch.randn(2, 8, 32, 32)
    resize = lambda x, size: torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    low_resolution = ResizedMaskFeatures(features)
    for size in [(8, 8), (16, 16), (32, 32), (4, 8)]:
        fast = low_resolution.mask_logits(queries, size)
        torch.testing.assert_close(fast, resize(mask_logits(queries, features), size))
        assert not fast.requires_grad


def test_activation_checkpointing_gives_the_same_gradients():
    vocabulary, pixels = make_vocabulary(3), make_pixels(1)
    masks, classes = make_labels(1, 3)
    gradients = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.transformer_decoder.decoder.layers)
        torch.manual_seed(0)
        model(pixel_values=pixels, mask_labels=masks, class_labels=classes, **vocabulary).loss.backward()
        gradients.append(torch.cat([p.grad.flatten() for p in trainable_parameters(model)]))
    torch.testing.assert_close(gradients[0], gradients[1])


def test_mask_scores_are_iou_to_the_configured_power():
    model = tiny_model(iou_score_exponent=2.0).eval()
    output = model(pixel_values=make_pixels(1), **make_vocabulary(2))
    _, mask_scores = ensemble_scores(output.class_queries_logits, output.clip_logits, output.iou_scores, model.config)
    torch.testing.assert_close(mask_scores, output.iou_scores**2)


def test_wrong_image_size_is_a_clear_error(model):
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, 128, 128\).*got \(1, 3, 96, 96\)"):
        model(pixel_values=torch.randn(1, 3, 96, 96), **make_vocabulary(2))


def test_empty_vocabulary_is_a_clear_error(model):
    vocabulary = make_vocabulary(2)
    vocabulary["input_ids"] = vocabulary["input_ids"][:0]
    vocabulary["attention_mask"] = vocabulary["attention_mask"][:0]
    vocabulary["prompt_to_synonym"] = vocabulary["prompt_to_synonym"][:0]
    vocabulary["synonym_to_class"] = vocabulary["synonym_to_class"][:0]
    with pytest.raises(ValueError, match="vocabulary is empty"):
        model(pixel_values=make_pixels(1), **vocabulary)


def test_class_without_a_name_is_a_clear_error(model):
    vocabulary = make_vocabulary(2)
    vocabulary["synonym_to_class"] = torch.tensor([0, 0, 2, 2])
    with pytest.raises(ValueError, match=r"classes without a name: \[1\]"):
        model(pixel_values=make_pixels(1), **vocabulary)


def test_mismatched_label_lists_are_clear_errors(model):
    vocabulary, pixels = make_vocabulary(3), make_pixels(2)
    masks, classes = make_labels(2, 3)
    with pytest.raises(ValueError, match="one entry per image: batch of 2, got 2 mask_labels and 1 class_labels"):
        model(pixel_values=pixels, mask_labels=masks, class_labels=classes[:1], **vocabulary)
    with pytest.raises(ValueError, match=r"class_labels\[1\] has shape \(1,\) but mask_labels\[1\] has 2 masks"):
        model(pixel_values=pixels, mask_labels=masks, class_labels=[classes[0], classes[1][:1]], **vocabulary)
    with pytest.raises(ValueError, match="outside the vocabulary's 3 classes"):
        model(pixel_values=pixels, mask_labels=masks, class_labels=[classes[0], torch.tensor([0, 5])], **vocabulary)
    with pytest.raises(ValueError, match="Pass both `mask_labels` and `class_labels`"):
        model(pixel_values=pixels, mask_labels=masks, **vocabulary)
    with pytest.raises(ValueError, match=r"mask_labels\[0\] must have shape \(num_segments, 128, 128\)"):
        model(pixel_values=pixels, mask_labels=[masks[0][:, :64], masks[1]], class_labels=classes, **vocabulary)


def test_image_without_segments_trains():
    model = tiny_model().train()
    masks, classes = make_labels(2, 3)
    masks[1], classes[1] = masks[1][:0], classes[1][:0]
    output = model(pixel_values=make_pixels(2), mask_labels=masks, class_labels=classes, **make_vocabulary(3))
    assert torch.isfinite(output.loss)
    output.loss.backward()


def test_pooling_uses_the_binary_mask_or_the_logit_softmax_when_it_is_empty():
    from possam.mask_pooling import mask_pool, pooling_weights

    logits = torch.full((1, 2, 4, 4), -3.0)
    logits[0, 0, :2, :2] = 2.0  # foreground in the top-left quarter
    logits[0, 1, 3, 3] = -1.0  # never foreground: pools where it is least negative
    weights = pooling_weights(logits)
    assert torch.equal(weights[0, 0], (logits[0, 0] > 0).float())
    torch.testing.assert_close(weights[0, 1].sum(), torch.tensor(1.0))
    assert weights[0, 1].argmax() == 15
    features = torch.arange(16.0).view(1, 1, 4, 4)
    pooled = mask_pool(features, weights)
    torch.testing.assert_close(pooled[0, 0], torch.tensor([2.5]))  # mean of 0, 1, 4, 5
    # A batch mixing empty and non-empty masks: the softmax only where the mask is empty, the binary mask elsewhere.
    logits = torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(0)) - 1.5
    logits[0, 2] = -torch.rand(5, 7) - 0.1
    logits[1, 4] = -torch.rand(5, 7) - 0.1
    empty = (logits > 0).flatten(2).sum(-1) == 0
    assert 2 <= empty.sum() < empty.numel()
    expected = torch.where(empty[..., None, None], logits.flatten(2).softmax(-1).view_as(logits), (logits > 0).float())
    torch.testing.assert_close(pooling_weights(logits), expected)


def test_first_step_gradients_are_bounded_even_with_empty_masks():
    """Untrained queries have empty masks at CLIP's resolution; their region embeddings must not be zero."""
    model = tiny_model().train()
    masks, classes = make_labels(2, 3)
    torch.manual_seed(0)
    model(pixel_values=make_pixels(2), mask_labels=masks, class_labels=classes, **make_vocabulary(3)).loss.backward()
    gradient_norm = torch.cat([p.grad.flatten() for p in trainable_parameters(model)]).norm()
    assert gradient_norm < 1e3, gradient_norm


def test_reduced_precision_inference_keeps_probabilities_in_float32():
    """bf16 weights (e.g. `from_pretrained(..., dtype=torch.bfloat16)`) and CPU autocast both run; ensembled
    probabilities are computed in float32 so rows still sum to one."""
    vocabulary, pixels = make_vocabulary(3), make_pixels(1)
    reference = tiny_model().eval()(pixel_values=pixels, **vocabulary)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = tiny_model().eval()(pixel_values=pixels, **vocabulary)
    bf16 = tiny_model().eval().to(torch.bfloat16)(pixel_values=pixels, **vocabulary)
    for output in (autocast, bf16):
        assert output.masks_queries_logits.dtype == torch.bfloat16
        probabilities, _ = ensemble_scores(output.class_queries_logits, output.clip_logits, output.iou_scores)
        assert probabilities.dtype == torch.float32
        torch.testing.assert_close(probabilities.sum(-1), torch.ones(1, 10))
        assert all(torch.isfinite(output[key].float()).all() for key in ("class_queries_logits", "masks_queries_logits", "iou_scores"))
        # bf16 keeps ~3 significant digits: the same predictions, approximately.
        torch.testing.assert_close(output.iou_scores.float(), reference.iou_scores, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_attention_implementation_can_be_requested_explicitly(tmp_path, implementation):
    tiny_model().save_pretrained(tmp_path)
    model = PosSamModel.from_pretrained(tmp_path, attn_implementation=implementation)
    assert model.sam.config._attn_implementation == implementation
    assert model.clip.text.config._attn_implementation == implementation
    with pytest.raises(ValueError, match="(?i)flash"):
        PosSamModel.from_pretrained(tmp_path, attn_implementation="flash_attention_2")


def test_text_classifier_saved_beside_a_checkpoint_reloads_without_the_text_tower(model, tmp_path):
    from possam import PosSamTextEmbeddings

    vocabulary, pixels = make_vocabulary(5), make_pixels(1)
    model.get_text_embeddings(**vocabulary).save(str(tmp_path / "text_vocabulary.safetensors"))
    calls = []
    fresh = tiny_model().eval()
    fresh.clip.text.register_forward_hook(lambda *args: calls.append(1))
    text = PosSamTextEmbeddings.load(str(tmp_path / "text_vocabulary.safetensors"))
    reloaded = fresh(pixel_values=pixels, synonym_embeddings=text.synonym_embeddings, synonym_to_class=text.synonym_to_class)
    assert calls == []
    expected = model(pixel_values=pixels, **vocabulary)
    for key in ("class_queries_logits", "clip_logits"):
        torch.testing.assert_close(reloaded[key], expected[key])
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a PosSAM text classifier file"):
        PosSamTextEmbeddings.load(str(tmp_path / "other.safetensors"))
