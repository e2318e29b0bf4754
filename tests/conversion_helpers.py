"""Tiny random models for the conversion tests, including the reference implementations' own (Meta's segment-anything,
OpenCLIP) that conversions are checked against.

Both reference packages are installed with `--no-deps` (tests/requirements-reference.txt) because they require
torchvision, which does not work with the CPU torch wheel. Neither needs it for what the tests use:

- segment-anything's package `__init__` imports its predictor (torchvision transforms); the tests import
  `segment_anything.modeling` under a bare package module that skips that `__init__`, and the predictor itself behind
  the torchvision placeholder below (its torchvision resize is never called).
- OpenCLIP and timm import torchvision at import time only for image transforms and a frozen BatchNorm the tests never
  use; a placeholder `torchvision` is importable just while they are imported, then removed again so nothing else
  (transformers in particular) ever sees it.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from functools import partial

import torch
from transformers import CLIPConfig, CLIPModel, SamConfig, SamModel
from transformers.utils.import_utils import is_torchvision_available


def import_segment_anything(submodule: str = "modeling") -> types.ModuleType:
    """`segment_anything.<submodule>` (`modeling`, `build_sam`) without running `segment_anything/__init__.py`."""
    if "segment_anything" not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None:
            raise ImportError("segment-anything is not installed: pip install --no-deps segment-anything==1.0")
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["segment_anything"] = package
    return importlib.import_module(f"segment_anything.{submodule}")


class _PlaceholderMeta(type):
    # Enum-like attribute access (`InterpolationMode.BILINEAR`) yields a name, enough for module-level tables.
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return f"{cls.__name__}.{name}"


class _Placeholder(metaclass=_PlaceholderMeta):
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__} is a test placeholder: torchvision is not installed.")


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (_Placeholder,), {})
        setattr(self, name, value)
        return value


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _PlaceholderModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        return None


@contextlib.contextmanager
def _torchvision_placeholder():
    # transformers caches whether torchvision exists; ask it first so the placeholder can never change its answer.
    assert not is_torchvision_available()
    finder = _PlaceholderFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
            del sys.modules[name]


def import_sam_predictor() -> type:
    """Meta's `SamPredictor`. Its module imports torchvision's resize for `set_image`; the tests call only
    `set_torch_image` (an already resized image) and `predict`, which need torch and numpy alone."""
    if "segment_anything.predictor" not in sys.modules:
        import_segment_anything("modeling")
        with _torchvision_placeholder():
            importlib.import_module("segment_anything.predictor")
    return sys.modules["segment_anything.predictor"].SamPredictor


def import_open_clip() -> types.ModuleType:
    """`open_clip` (and timm), imported behind a temporary torchvision placeholder."""
    if "open_clip" not in sys.modules:
        with _torchvision_placeholder():
            importlib.import_module("timm")
            importlib.import_module("open_clip")
            _register_tiny_convnexts()
    return sys.modules["open_clip"]


def _register_tiny_convnexts() -> None:
    timm = sys.modules["timm"]
    from timm.models import register_model

    # convnext_large's block layout (Linear MLP) and convnext_atto's (1x1-conv MLP), at test size.
    @register_model
    def possam_test_convnext(pretrained=False, **kwargs):
        return timm.models.convnext.convnext_large(
            pretrained=False, depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), **kwargs
        )

    @register_model
    def possam_test_convnext_conv_mlp(pretrained=False, **kwargs):
        return timm.models.convnext.convnext_atto(
            pretrained=False, depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), **kwargs
        )


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights of unit-ish scale everywhere: initial values such as layer scale 1e-6 would hide mistakes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name == "logit_scale":
                continue
            noise = torch.randn(parameter.shape, generator=generator)
            is_norm_weight = name.endswith("weight") and parameter.ndim == 1
            parameter.copy_(1.0 + 0.1 * noise if is_norm_weight else 0.2 * noise)
    return module.eval()


# Tiny SAM image encoder: 128x128 input (8x8 tokens), window 3 (padded to 9) and one global block.
SAM_ENCODER_KWARGS = {
    "img_size": 128,
    "patch_size": 16,
    "embed_dim": 64,
    "depth": 3,
    "num_heads": 2,
    "mlp_ratio": 4.0,
    "out_chans": 32,
    "qkv_bias": True,
    "use_rel_pos": True,
    "window_size": 3,
    "global_attn_indexes": (1,),
}


def tiny_sam_image_encoder(seed: int = 0) -> torch.nn.Module:
    modeling = import_segment_anything("modeling")
    encoder = modeling.ImageEncoderViT(norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **SAM_ENCODER_KWARGS)
    return randomize_(encoder, seed)


def tiny_meta_sam(encoder: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Meta's whole `Sam` around a tiny image encoder: a prompt encoder and mask decoder at the encoder's 32 channels
    (8 heads as in every public SAM, since no tensor records the head count), random weights of real scale."""
    modeling = import_segment_anything("modeling")
    channels, size = SAM_ENCODER_KWARGS["out_chans"], SAM_ENCODER_KWARGS["img_size"]
    grid = size // SAM_ENCODER_KWARGS["patch_size"]
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=channels, image_embedding_size=(grid, grid), input_image_size=(size, size), mask_in_chans=16
    )
    mask_decoder = modeling.MaskDecoder(
        transformer_dim=channels,
        transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=channels, num_heads=8, mlp_dim=64),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=32,
    )
    randomize_(prompt_encoder, seed + 1)
    randomize_(mask_decoder, seed + 2)
    # Meta keeps the random Fourier matrix as a buffer (drawn from the global RNG at construction): seed it too.
    gaussian = prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    gaussian.copy_(torch.randn(gaussian.shape, generator=torch.Generator().manual_seed(seed + 3)))
    return modeling.Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder).eval()


def sam_checkpoint_state_dict(encoder: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The layout of Meta's `sam_vit_*.pth` for a tiny SAM (`tiny_meta_sam` around `encoder`), with the normalization
    buffers that a full SAM checkpoint also holds."""
    state_dict = dict(tiny_meta_sam(encoder, seed).state_dict())
    state_dict.update(
        {
            "pixel_mean": torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1),
            "pixel_std": torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1),
        }
    )
    return state_dict


# Tiny OpenCLIP ConvNeXt CLIP: the `convnext_large_d_320` recipe (timm trunk, no pooling change, MLP head), a 64-wide
# 2-layer text tower with 64-wide heads as OpenCLIP uses, 16-token context, 32-d embedding.
OPENCLIP_CONTEXT_LENGTH = 16


def tiny_openclip_model(seed: int = 0, conv_mlp: bool = False, quick_gelu: bool = False) -> torch.nn.Module:
    open_clip = import_open_clip()
    model = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg={
            "timm_model_name": "possam_test_convnext_conv_mlp" if conv_mlp else "possam_test_convnext",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "mlp",
            "timm_drop": 0.0,
            "image_size": 64,
        },
        text_cfg={"context_length": OPENCLIP_CONTEXT_LENGTH, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
        quick_gelu=quick_gelu,
    )
    return randomize_(model, seed)


def openclip_token_ids(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCLIP's tokenizer ids (start 49406, end 49407, zero padding) and the attention mask up to the end token."""
    open_clip = import_open_clip()
    input_ids = open_clip.tokenizer.SimpleTokenizer(context_length=OPENCLIP_CONTEXT_LENGTH)(texts)
    end = input_ids.argmax(dim=-1, keepdim=True)  # the end token has the largest id
    attention_mask = (torch.arange(input_ids.shape[1]) <= end).long()
    return input_ids, attention_mask


def tiny_transformers_sam(seed: int = 0) -> SamModel:
    """A transformers `SamModel` (what `facebook/sam-vit-base` holds) at test size: 128x128 input, 8x8 tokens."""
    torch.manual_seed(seed)
    vision = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "mlp_dim": 64,
        "output_channels": 32,
        "image_size": 128,
        "window_size": 4,
        "global_attn_indexes": [1],
        "num_pos_feats": 16,
        "initializer_range": 0.02,
    }
    config = SamConfig(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": 32, "image_size": 128},
        mask_decoder_config={"hidden_size": 32, "num_attention_heads": 2, "mlp_dim": 64, "iou_head_hidden_dim": 32},
    )
    return randomize_(SamModel(config), seed)


def tiny_transformers_clip(seed: int = 0) -> CLIPModel:
    """A transformers ViT `CLIPModel` at test size (32x32 input, patch 8). Its sub-configs keep the default
    `projection_dim` (512) while the model projects to 24, as in real checkpoints whose sub-configs are stale."""
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=24,
    )
    return randomize_(CLIPModel(config), seed)
