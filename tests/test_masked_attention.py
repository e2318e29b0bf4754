"""The decoder's masked cross-attention on scaled_dot_product_attention equals nn.MultiheadAttention, and the decoder
built on it equals transformers' Mask2Former decoder with the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import Mask2FormerTransformerModule

from conftest import tiny_model
from possam.masked_attention import PosSamMaskedCrossAttention


def attention_pair(embed_dim=32, heads=4, seed=0):
    torch.manual_seed(seed)
    stock = nn.MultiheadAttention(embed_dim, heads)
    nn.init.normal_(stock.in_proj_bias)
    nn.init.normal_(stock.out_proj.bias)
    ours = PosSamMaskedCrossAttention(embed_dim, heads)
    ours.load_state_dict(stock.state_dict())
    return stock, ours


def attention_inputs(batch=2, queries=5, keys=37, embed_dim=32, heads=4, seed=1):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(queries, batch, embed_dim, generator=generator)
    key = torch.randn(keys, batch, embed_dim, generator=generator)
    value = torch.randn(keys, batch, embed_dim, generator=generator)
    blocked = torch.rand(batch, queries, keys, generator=generator) < 0.6
    blocked[:, :, 0] = False  # every query may attend somewhere, as the decoder guarantees
    return query, key, value, blocked


@pytest.mark.parametrize("mask_form", ["per_head", "shared", "float", "none"])
def test_equals_multihead_attention_forward_and_backward(mask_form):
    stock, ours = attention_pair()
    query, key, value, blocked = attention_inputs()
    stock_mask = blocked.repeat_interleave(4, dim=0)
    our_mask = {"per_head": stock_mask, "shared": blocked[:, None], "none": None,
                "float": torch.zeros(stock_mask.shape).masked_fill(stock_mask, float("-inf"))}[mask_form]
    if mask_form == "float":
        stock_mask = our_mask
    elif mask_form == "none":
        stock_mask = None
    inputs = [tensor.clone().requires_grad_() for tensor in (query, key, value)]
    reference = stock(*inputs, attn_mask=stock_mask)[0]
    reference.square().sum().backward()
    reference_grads = [tensor.grad for tensor in inputs] + [p.grad for p in stock.parameters()]

    inputs = [tensor.clone().requires_grad_() for tensor in (query, key, value)]
    output, weights = ours(*inputs, attn_mask=our_mask)
    output.square().sum().backward()
    grads = [tensor.grad for tensor in inputs] + [p.grad for p in ours.parameters()]

    assert weights is None and output.shape == reference.shape == (5, 2, 32)
    torch.testing.assert_close(output, reference, atol=1e-5, rtol=1e-5)
    assert len(grads) == len(reference_grads) == 7
    for grad, reference_grad in zip(grads, reference_grads):
        torch.testing.assert_close(grad, reference_grad, atol=1e-5, rtol=1e-5)
    # The mask matters: without it the output differs.
    if mask_form != "none":
        assert (ours(query, key, value)[0] - output).abs().max() > 1e-2


def test_refuses_what_it_does_not_compute():
    _, ours = attention_pair()
    query, key, value, blocked = attention_inputs()
    with pytest.raises(NotImplementedError, match="attention weights"):
        ours(query, key, value, need_weights=True)
    with pytest.raises(NotImplementedError, match="key padding mask"):
        ours(query, key, value, key_padding_mask=torch.zeros(2, 37, dtype=torch.bool))


@pytest.mark.parametrize("grad", [False, True])
def test_decoder_equals_transformers_mask2former_decoder(grad):
    model = tiny_model().eval()
    decoder = model.transformer_decoder
    assert all(type(layer.cross_attn) is PosSamMaskedCrossAttention for layer in decoder.decoder.layers)
    config = model.config.to_mask2former_config()
    stock = Mask2FormerTransformerModule(in_features=model.config.feature_size, config=config).eval()
    # Same parameter names: transformers' module takes PosSAM's decoder weights as they are.
    stock.load_state_dict(decoder.state_dict())

    generator = torch.Generator().manual_seed(0)
    hidden = config.hidden_dim
    features = [torch.randn(2, hidden, size, size, generator=generator) for size in (4, 8, 16)]
    mask_features = torch.randn(2, config.mask_feature_size, 32, 32, generator=generator)
    with torch.set_grad_enabled(grad):
        ours = decoder(features, mask_features, full_resolution_masks=True)
        reference = stock(features, mask_features)
    assert len(ours.masks_queries_logits) == len(reference.masks_queries_logits) == config.decoder_layers
    for mine, theirs in zip(ours.masks_queries_logits, reference.masks_queries_logits):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)
    assert reference.masks_queries_logits[-1].abs().max() > 0.1
