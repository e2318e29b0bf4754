"""PosSAM's multi-scale deformable attention equals transformers' (functions, attention module, encoder layer, pixel
decoder)."""

from __future__ import annotations

import pytest
import torch
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderLayer,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
)
from transformers.models.mask2former.modeling_mask2former import (
    multi_scale_deformable_attention as transformers_attention,
)

from conftest import tiny_model
from possam import possam_preset
from possam import deformable_attention
from possam.deformable_attention import (
    PosSamMultiscaleDeformableAttention,
    gather_bilinear_corners,
    multi_scale_deformable_attention,
    sample_point_by_point,
)
from possam.pixel_decoder import PosSamPixelDecoder, PosSamPixelDecoderEncoderLayer


SHAPES = [(7, 9), (4, 5), (2, 3)]


def random_inputs(batch_size=2, heads=4, head_dim=8, points=3, queries=11, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = sum(height * width for height, width in SHAPES)
    value = torch.randn(batch_size, tokens, heads, head_dim, generator=generator)
    # Some locations fall outside [0, 1]: zero padding must match too.
    locations = torch.rand(batch_size, queries, heads, len(SHAPES), points, 2, generator=generator) * 1.4 - 0.2
    weights = torch.rand(batch_size, queries, heads, len(SHAPES), points, generator=generator)
    return value, locations, weights / weights.sum((-1, -2), keepdim=True)


@pytest.mark.parametrize("function", [sample_point_by_point, gather_bilinear_corners, multi_scale_deformable_attention])
def test_functions_equal_transformers_forward(function, monkeypatch):
    # Chunks of 4 queries (11 = 4 + 4 + 3) exercise the gather's chunking and its remainder.
    monkeypatch.setattr(deformable_attention, "QUERY_CHUNK_SIZE", 4)
    inputs = random_inputs()
    ours = function(inputs[0], SHAPES, *inputs[1:])
    reference = transformers_attention(inputs[0], SHAPES, *inputs[1:])
    assert ours.shape == reference.shape == (2, 11, 32)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert reference.abs().max() > 0.1


def test_gather_matches_zero_padding_on_and_beyond_the_border():
    value, _, weights = random_inputs(queries=8)
    # Exactly on the outer pixel edges (0, 1), half a pixel beyond them, and far outside, in x and y.
    edges = torch.tensor([0.0, 1.0, -0.05, 1.05, -3.0, 4.0, 0.5, 0.999])
    locations = torch.stack(torch.broadcast_tensors(edges[:, None], edges.flip(0)[:, None]), -1)
    locations = locations.view(1, 8, 1, 1, 1, 2).expand(2, 8, 4, len(SHAPES), 3, 2).contiguous()
    ours = gather_bilinear_corners(value, SHAPES, locations, weights)
    reference = transformers_attention(value, SHAPES, locations, weights)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert reference[:, 4].abs().max() == 0  # (-3, 4): outside in both axes
    assert reference[:, 0].abs().max() > 0.05  # (0, 0.999): a corner, a quarter of a pixel inside


def test_gather_propagates_nan_locations_like_transformers():
    value, locations, weights = random_inputs()
    locations[0, 3, 1, 0, 0, 0] = float("nan")
    ours = gather_bilinear_corners(value, SHAPES, locations, weights)
    reference = transformers_attention(value, SHAPES, locations, weights)
    assert torch.equal(ours.isnan(), reference.isnan()) and ours.isnan().any()
    torch.testing.assert_close(ours.nan_to_num(), reference.nan_to_num(), atol=1e-5, rtol=0)


def test_inference_takes_the_gather_and_training_the_differentiable_path(monkeypatch):
    calls = []
    for name in ("sample_point_by_point", "gather_bilinear_corners"):
        function = getattr(deformable_attention, name)
        monkeypatch.setattr(
            deformable_attention, name, lambda *args, name=name, function=function: calls.append(name) or function(*args)
        )
    value, locations, weights = random_inputs()
    with torch.no_grad():
        multi_scale_deformable_attention(value.requires_grad_(), SHAPES, locations, weights)
    multi_scale_deformable_attention(value, SHAPES, locations, weights)
    multi_scale_deformable_attention(value.detach(), SHAPES, locations, weights)
    assert calls == ["gather_bilinear_corners", "sample_point_by_point", "gather_bilinear_corners"]


def test_function_equals_transformers_backward():
    ours_inputs = [tensor.clone().requires_grad_() for tensor in random_inputs(seed=1)]
    reference_inputs = [tensor.clone().requires_grad_() for tensor in random_inputs(seed=1)]
    upstream = torch.randn(2, 11, 32, generator=torch.Generator().manual_seed(2))
    (multi_scale_deformable_attention(ours_inputs[0], SHAPES, *ours_inputs[1:]) * upstream).sum().backward()
    (transformers_attention(reference_inputs[0], SHAPES, *reference_inputs[1:]) * upstream).sum().backward()
    for ours, reference, name in zip(ours_inputs, reference_inputs, ("value", "locations", "weights")):
        assert reference.grad.abs().max() > 1e-3, name
        torch.testing.assert_close(ours.grad, reference.grad, atol=1e-5, rtol=0, msg=name)


def test_attention_module_equals_transformers_with_mask_and_backward():
    torch.manual_seed(0)
    reference = Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention(32, 4, len(SHAPES), 3)
    ours = PosSamMultiscaleDeformableAttention(32, 4, len(SHAPES), 3)
    ours.load_state_dict(reference.state_dict())
    tokens = sum(height * width for height, width in SHAPES)
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, tokens, 32, generator=generator)
    position = torch.randn(2, tokens, 32, generator=generator)
    reference_points = torch.rand(2, tokens, len(SHAPES), 2, generator=generator)
    padding = torch.zeros(2, tokens, dtype=torch.bool)
    padding[1, -5:] = True
    results = []
    for module in (ours, reference):
        states = hidden.clone().requires_grad_()
        output, weights = module(
            states,
            attention_mask=padding,
            encoder_hidden_states=states,
            position_embeddings=position,
            reference_points=reference_points,
            spatial_shapes_list=SHAPES,
        )
        output.square().sum().backward()
        results.append((output, weights, states.grad, module.sampling_offsets.weight.grad))
    for ours_tensor, reference_tensor in zip(*results):
        torch.testing.assert_close(ours_tensor, reference_tensor, atol=1e-5, rtol=1e-5)
    # Without autograd (values masked and sampling locations built in place, the gather) the outputs are the same.
    with torch.no_grad():
        inference = ours(
            hidden, attention_mask=padding, encoder_hidden_states=hidden, position_embeddings=position,
            reference_points=reference_points, spatial_shapes_list=SHAPES,
        )
    torch.testing.assert_close(inference[0], results[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inference[1], results[1][1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("output_attentions", [False, True])
def test_encoder_layer_chunked_inference_equals_transformers(output_attentions):
    config = possam_preset("tiny").to_mask2former_config()
    torch.manual_seed(0)
    reference = Mask2FormerPixelDecoderEncoderLayer(config).eval()
    ours = PosSamPixelDecoderEncoderLayer(config).eval()
    ours.load_state_dict(reference.state_dict())
    ours.feed_forward_chunk_size = 5  # 74 tokens: 14 chunks and a remainder
    tokens = sum(height * width for height, width in SHAPES)
    generator = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, tokens, config.feature_size, generator=generator)
    inputs = dict(
        attention_mask=torch.zeros(2, tokens, dtype=torch.bool),
        position_embeddings=torch.randn(2, tokens, config.feature_size, generator=generator),
        reference_points=torch.rand(2, tokens, len(SHAPES), 2, generator=generator),
        spatial_shapes_list=SHAPES,
        output_attentions=output_attentions,
    )
    with torch.no_grad():
        ours_outputs, reference_outputs = ours(hidden, **inputs), reference(hidden, **inputs)
    assert len(ours_outputs) == len(reference_outputs) == 1 + output_attentions
    for ours_tensor, reference_tensor in zip(ours_outputs, reference_outputs):
        torch.testing.assert_close(ours_tensor, reference_tensor, atol=1e-5, rtol=1e-5)
    # With autograd the layer is transformers' computation, gradients included.
    states = hidden.clone().requires_grad_()
    ours(states, **inputs)[0].square().sum().backward()
    reference_states = hidden.clone().requires_grad_()
    reference(reference_states, **inputs)[0].square().sum().backward()
    torch.testing.assert_close(states.grad, reference_states.grad, atol=1e-5, rtol=1e-5)


def test_pixel_decoder_is_transformers_with_our_attention():
    config = possam_preset("tiny")
    mask2former_config = config.to_mask2former_config()
    channels = [config.fpn_hidden_size] * 4
    torch.manual_seed(0)
    reference = Mask2FormerPixelDecoder(mask2former_config, feature_channels=channels).eval()
    ours = PosSamPixelDecoder(mask2former_config, feature_channels=channels).eval()
    assert ours.state_dict().keys() == reference.state_dict().keys()
    ours.load_state_dict(reference.state_dict())
    assert all(isinstance(layer, PosSamPixelDecoderEncoderLayer) for layer in ours.encoder.layers)
    for layer in ours.encoder.layers:
        layer.feed_forward_chunk_size = 16
    generator = torch.Generator().manual_seed(4)
    pyramid = [torch.randn(1, config.fpn_hidden_size, 32 // 2**level, 32 // 2**level, generator=generator) for level in range(4)]
    with torch.no_grad():
        ours_output, reference_output = ours(pyramid), reference(pyramid)
    torch.testing.assert_close(ours_output.mask_features, reference_output.mask_features, atol=1e-5, rtol=1e-5)
    for ours_map, reference_map in zip(ours_output.multi_scale_features, reference_output.multi_scale_features):
        torch.testing.assert_close(ours_map, reference_map, atol=1e-5, rtol=1e-5)


def test_model_uses_it():
    model = tiny_model()
    assert isinstance(model.pixel_decoder, PosSamPixelDecoder)
    assert all(isinstance(layer.self_attn, PosSamMultiscaleDeformableAttention) for layer in model.pixel_decoder.encoder.layers)
    assert "PosSamPixelDecoderEncoderLayer" in model._no_split_modules
