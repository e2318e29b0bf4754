"""PosSAM's multi-scale deformable attention equals transformers' (function, attention module, pixel decoder)."""

from __future__ import annotations

import pytest
import torch
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
)
from transformers.models.mask2former.modeling_mask2former import (
    multi_scale_deformable_attention as transformers_attention,
)

from conftest import tiny_model
from possam import possam_preset
from possam.deformable_attention import (
    PosSamMultiscaleDeformableAttention,
    PosSamPixelDecoder,
    multi_scale_deformable_attention,
)


SHAPES = [(7, 9), (4, 5), (2, 3)]


def random_inputs(batch_size=2, heads=4, head_dim=8, points=3, queries=11, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = sum(height * width for height, width in SHAPES)
    value = torch.randn(batch_size, tokens, heads, head_dim, generator=generator)
    # Some locations fall outside [0, 1]: zero padding must match too.
    locations = torch.rand(batch_size, queries, heads, len(SHAPES), points, 2, generator=generator) * 1.4 - 0.2
    weights = torch.rand(batch_size, queries, heads, len(SHAPES), points, generator=generator)
    return value, locations, weights / weights.sum((-1, -2), keepdim=True)


@pytest.mark.parametrize("grad", [False, True])
def test_function_equals_transformers_forward(grad):
    inputs = random_inputs()
    with torch.set_grad_enabled(grad):
        ours = multi_scale_deformable_attention(inputs[0], SHAPES, *inputs[1:])
        reference = transformers_attention(inputs[0], SHAPES, *inputs[1:])
    assert ours.shape == reference.shape == (2, 11, 32)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert reference.abs().max() > 0.1


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


def test_pixel_decoder_is_transformers_with_our_attention():
    config = possam_preset("tiny")
    mask2former_config = config.to_mask2former_config()
    channels = [config.fpn_hidden_size] * 4
    torch.manual_seed(0)
    reference = Mask2FormerPixelDecoder(mask2former_config, feature_channels=channels).eval()
    ours = PosSamPixelDecoder(mask2former_config, feature_channels=channels).eval()
    assert ours.state_dict().keys() == reference.state_dict().keys()
    ours.load_state_dict(reference.state_dict())
    assert all(isinstance(layer.self_attn, PosSamMultiscaleDeformableAttention) for layer in ours.encoder.layers)
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
