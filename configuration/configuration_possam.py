"""PosSAM configuration: the frozen SAM and CLIP towers, the trainable mask decoder, LDP, IoU head, losses and MASE.

Every value the paper leaves open (SPEC.md, "[choice]") is a documented field here so it can be ablated.
"""

from __future__ import annotations

import json
import math
import os
import typing
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import (
    CLIPTextConfig,
    Mask2FormerConfig,
    SamConfig,
    SamMaskDecoderConfig,
    SamPromptEncoderConfig,
    SamVisionConfig,
)
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.models.auto.configuration_auto import AutoConfig

from .remote_code import CONFIG_AUTO_MAP, CUSTOM_PIPELINES, SavesRemoteCode, remote_code_in_use, write_remote_code
from .vocabulary import load_vocabulary


# The 14 prompt templates FC-CLIP uses for its text classifier; `{}` is replaced by each class name.
DEFAULT_PROMPT_TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

# SAM's ImageNet normalization and CLIP's own, both on the 0-255 pixel scale.
SAM_IMAGE_MEAN = (123.675, 116.28, 103.53)
SAM_IMAGE_STD = (58.395, 57.12, 57.375)
CLIP_IMAGE_MEAN = (122.7709383, 116.7460125, 104.09373615)
CLIP_IMAGE_STD = (68.5005327, 66.6321579, 70.32316305)

CLIP_VISION_MODEL_TYPES = ("convnext", "clip_vision_model")
# The shipped CLIP tokenizer pads with <|endoftext|>, as OpenAI's does; the text configs declare the same id.
CLIP_PAD_TOKEN_ID = 49407

# OpenCLIP `convnext_large_d_320` (the CLIP of FC-CLIP): ConvNeXt-Large trunk and a 16-layer, 768-wide text tower.
CONVNEXT_LARGE_VISION_KWARGS = {
    "depths": [3, 3, 27, 3],
    "hidden_sizes": [192, 384, 768, 1536],
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu",
}
CONVNEXT_LARGE_TEXT_KWARGS = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 16,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 768,
    "layer_norm_eps": 1e-5,
    "pad_token_id": CLIP_PAD_TOKEN_ID,
}


@strict
class PosSamClipConfig(PreTrainedConfig):
    r"""
    The frozen CLIP of PosSAM: a text tower that embeds class names, and a dense vision tower whose mask-pooled
    features classify regions. Two vision towers are supported:

    - `vision_config.model_type == "convnext"`: an OpenCLIP ConvNeXt CLIP (FC-CLIP's `convnext_large_d_320` by
      default) assembled from a transformers `ConvNextModel` trunk (dense features = last stage, stride 32) and a
      region head (the trunk's final LayerNorm, then a 2-layer MLP to the embedding).
    - `vision_config.model_type == "clip_vision_model"`: a transformers ViT `CLIPModel`; dense features are the last
      layer's patch tokens through `post_layernorm` and the visual projection, so the region head is the identity.

    text_config (`CLIPTextConfig` or `dict`, *optional*):
        The text tower (`CLIPTextModelWithProjection`), OpenCLIP ConvNeXt-L's by default.
    vision_config (`ConvNextConfig`, `CLIPVisionConfig` or `dict`, *optional*):
        The vision tower; ConvNeXt-Large by default.
    projection_dim (`int`, *optional*, defaults to 768):
        The joint image-text embedding width; must equal `text_config.projection_dim` (and the ViT's).
    head_hidden_size (`int`, *optional*, defaults to 1536):
        Hidden width of the ConvNeXt region head MLP (1536 -> 1536 -> 768 for `convnext_large_d_320`).
    head_hidden_act (`str`, *optional*, defaults to `"gelu"`):
        Activation of the ConvNeXt region head MLP.
    logit_scale_init_value (`float`, *optional*, defaults to 2.6592):
        Initial value of CLIP's own (frozen) log logit scale, overwritten by converted checkpoints.
    image_mean (`list[float]`), image_std (`list[float]`):
        CLIP's input normalization on the 0-255 scale, applied inside the model to the padded image.
    input_size (`int`, *optional*):
        Side of the square image fed to the CLIP vision tower; `None` feeds the SAM input (1024) unchanged, as FC-CLIP
        does for ConvNeXt. ViT towers interpolate their position embeddings to this size.
    """

    model_type = "possam_clip"
    base_config_key = "clip_config"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=CLIPTextConfig, init_kwargs=CONVNEXT_LARGE_TEXT_KWARGS),
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="convnext", init_kwargs=CONVNEXT_LARGE_VISION_KWARGS
        ),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 768
    head_hidden_size: int = 1536
    head_hidden_act: str = "gelu"
    logit_scale_init_value: float = 2.6592
    image_mean: list[float] | tuple[float, ...] = CLIP_IMAGE_MEAN
    image_std: list[float] | tuple[float, ...] = CLIP_IMAGE_STD
    input_size: int | None = None

    @property
    def is_convnext(self) -> bool:
        return self.vision_config.model_type == "convnext"

    @property
    def dense_feature_dim(self) -> int:
        """Channels of the dense CLIP feature map that LDP mask-pools (1536 for ConvNeXt-L)."""
        return self.vision_config.hidden_sizes[-1] if self.is_convnext else self.projection_dim

    def validate_towers(self):
        if self.vision_config.model_type not in CLIP_VISION_MODEL_TYPES:
            raise ValueError(
                f"clip_config.vision_config.model_type must be one of {CLIP_VISION_MODEL_TYPES}, "
                f"got {self.vision_config.model_type!r}."
            )
        if self.text_config.projection_dim != self.projection_dim:
            raise ValueError(
                f"clip_config.text_config.projection_dim ({self.text_config.projection_dim}) must equal "
                f"clip_config.projection_dim ({self.projection_dim})."
            )
        if not self.is_convnext and self.vision_config.projection_dim != self.projection_dim:
            raise ValueError(
                f"clip_config.vision_config.projection_dim ({self.vision_config.projection_dim}) must equal "
                f"clip_config.projection_dim ({self.projection_dim})."
            )
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("clip_config.image_mean and image_std must have 3 values (RGB).")


# Fields checked by `PosSamConfig.validate_field_values` beyond their declared choices.
_POSITIVE_INT_FIELDS = (
    "fpn_hidden_size", "feature_size", "mask_feature_size", "encoder_layers", "encoder_feedforward_dim", "num_queries",
    "hidden_dim", "decoder_layers", "num_attention_heads", "dim_feedforward", "iou_head_hidden_dim",
    "iou_head_num_layers", "ldp_num_heads", "ldp_intermediate_size", "train_num_points",
)
_NON_NEGATIVE_NUMBER_FIELDS = (
    "dropout", "init_std", "init_xavier_std", "logit_scale_max", "class_weight", "mask_weight", "dice_weight",
    "iou_loss_weight", "no_object_weight", "oversample_ratio", "importance_sample_ratio", "ensemble_alpha",
    "ensemble_beta", "mase_iou_threshold", "mase_confidence_threshold", "mase_void_threshold", "iou_score_exponent",
)


@strict
class PosSamConfig(SavesRemoteCode, PreTrainedConfig):
    r"""
    Configuration of [`PosSamModel`]. Defaults give PosSAM-B (SAM ViT-B + OpenCLIP ConvNeXt-L, 250 queries); see
    [`possam_preset`] for the tiny, B, L and H presets.

    > Frozen towers

    sam_vision_config (`SamVisionConfig` or `dict`, *optional*):
        The SAM image encoder (`SamVisionModel`); its 256-channel neck output (stride 16) feeds the FPN.
    clip_config (`PosSamClipConfig` or `dict`, *optional*):
        The CLIP text and vision towers.
    image_mean (`list[float]`), image_std (`list[float]`):
        SAM's normalization (0-255 scale) that `pixel_values` carry; used to re-normalize the image for CLIP.
    sam_prompt_encoder_config (`SamPromptEncoderConfig` or `dict`, *optional*):
        SAM's prompt encoder (points, boxes -> prompt tokens), frozen, for `PosSamModel.segment_prompts`. Its
        `hidden_size` must equal `sam_vision_config.output_channels` and its `image_size` / `patch_size` the encoder's.
        When absent (configs saved before promptable segmentation existed) it is derived from `sam_vision_config`.
    sam_mask_decoder_config (`SamMaskDecoderConfig` or `dict`, *optional*):
        SAM's two-way mask decoder (prompt tokens + the SAM neck output -> masks and predicted IoU), frozen. Its
        `hidden_size` must equal `sam_vision_config.output_channels`; SAM's defaults otherwise (2 layers, 8 heads,
        3 multimask outputs).

    sam_pretrained (`str`, *optional*), clip_pretrained (`str`, *optional*):
        Where the towers' weights were loaded from (Hub id, folder or file), recorded by
        [`PosSamModel.from_pretrained_backbones`] and kept through saving and loading. `None`: the towers were not
        loaded from a checkpoint (a model built from a config has random towers); the model card says so.

    > Trainable mask decoder

    fpn_hidden_size (`int`, *optional*, defaults to 256):
        Channels of each level of the simple feature pyramid built from the SAM map (strides 4, 8, 16, 32).
    feature_size (`int`, *optional*, defaults to 256):
        Width of the Mask2Former pixel decoder (multiple of 32: it uses GroupNorm(32)).
    mask_feature_size (`int`, *optional*, defaults to 256):
        Channels of the stride-4 `mask_features` that masks and LDP's SAM stream are computed from.
    encoder_layers (`int`, *optional*, defaults to 6):
        Deformable-attention layers of the pixel decoder.
    encoder_feedforward_dim (`int`, *optional*, defaults to 1024):
        FFN width of the pixel decoder layers.
    num_queries (`int`, *optional*, defaults to 250):
        Number of mask queries K (FC-CLIP's value).
    hidden_dim (`int`, *optional*, defaults to 256):
        Width of the queries and of the masked-attention decoder.
    decoder_layers (`int`, *optional*, defaults to 10):
        Predictions of the masked-attention decoder: the initial one plus `decoder_layers - 1` layers (9).
    num_attention_heads (`int`, *optional*, defaults to 8):
        Heads of the pixel decoder's deformable attention and of the masked-attention decoder.
    dim_feedforward (`int`, *optional*, defaults to 2048):
        FFN width of the masked-attention decoder layers.
    dropout (`float`, *optional*, defaults to 0.0):
        Dropout in the pixel decoder and the decoder.
    pre_norm (`bool`, *optional*, defaults to `False`):
        Pre-norm decoder layers (Mask2Former uses post-norm).
    init_std (`float`), init_xavier_std (`float`):
        Initialization scales of the decoder, as in Mask2Former.

    > IoU head

    iou_head_hidden_dim (`int`, *optional*, defaults to 256):
        Width of the IoU head MLP.
    iou_head_num_layers (`int`, *optional*, defaults to 3):
        Layers of the IoU head MLP (256 -> 256 -> 1).

    > Local Discriminative Pooling

    ldp_fusion (`str`, *optional*, defaults to `"self_attention"`):
        How the CLIP and SAM region streams are fused: `"self_attention"` (joint self-attention over the 2K region
        tokens), `"sum"`, `"concat_mlp"`, or `"none"` (classify the SAM stream alone, as FC-CLIP's in-vocabulary
        branch).
    ldp_layers (`int`, *optional*, defaults to 1):
        Self-attention layers of the `"self_attention"` fusion.
    ldp_num_heads (`int`, *optional*, defaults to 8):
        Heads of those layers.
    ldp_intermediate_size (`int`, *optional*, defaults to 2048):
        FFN width of those layers and hidden width of the `"concat_mlp"` fusion.
    ldp_hidden_size (`int`, *optional*):
        Width of the region embeddings G_ldp; they are compared with text embeddings, so it must equal
        `clip_config.projection_dim` (`None` takes that value).

    > Text classifier

    prompt_templates (`list[str]`, *optional*):
        Templates each class name is inserted into (`{}`); embeddings are averaged over templates. FC-CLIP's 14.
    logit_scale_init_value (`float`, *optional*, defaults to ln(1/0.07)):
        Initial value of the learnable log logit scale of the in-vocabulary (LDP) classifier.
    logit_scale_max (`float`, *optional*, defaults to 100.0):
        Upper clamp of `exp(logit_scale)`.
    vocabulary (`list[str]`, *optional*):
        The default vocabulary used when no class names are given, one entry per class ("person,child,girl").
        COCO panoptic (133 classes) by default.
    vocabulary_is_thing (`list[bool]`, *optional*):
        Thing (True) / stuff (False) flag of each default class.
    training_vocabulary (`list[str]`, *optional*):
        Class names seen in training; only the `"geometric"` ensemble uses it (seen = name in this list).

    > Losses

    class_weight (`float`, *optional*, defaults to 2.0):
        Weight of the classification cross-entropy (and of the class cost in matching).
    mask_weight (`float`, *optional*, defaults to 5.0):
        Weight of the point-sampled sigmoid BCE mask loss (and matching cost).
    dice_weight (`float`, *optional*, defaults to 5.0):
        Weight of the point-sampled Dice loss (and matching cost).
    iou_loss_weight (`float`, *optional*, defaults to 1.0):
        Weight of the IoU head's MSE loss.
    iou_target_unmatched (`str`, *optional*, defaults to `"zero"`):
        IoU target of queries matched to no ground truth: `"zero"` (learn to flag them) or `"ignore"` (no loss).
    no_object_weight (`float`, *optional*, defaults to 0.1):
        Cross-entropy weight of the void class.
    train_num_points (`int`, *optional*, defaults to 12544):
        Points sampled per mask for matching and for the mask losses.
    oversample_ratio (`float`, *optional*, defaults to 3.0):
        Oversampling of candidate points for importance sampling.
    importance_sample_ratio (`float`, *optional*, defaults to 0.75):
        Fraction of the points chosen where the prediction is most uncertain.
    use_auxiliary_loss (`bool`, *optional*, defaults to `True`):
        Deep supervision: apply every loss to every decoder prediction, not only the last.

    > Inference: Mask-Aware Selective Ensemble (MASE)

    ensemble_mode (`str`, *optional*, defaults to `"mase"`):
        How LDP (in-vocabulary) and CLIP (out-of-vocabulary) class probabilities are combined: `"mase"` (seen classes
        decided per image from IoU and LDP confidence), `"geometric"` (FC-CLIP: seen = in `training_vocabulary`),
        `"ldp_only"` or `"clip_only"`.
    ensemble_alpha (`float`, *optional*, defaults to 0.4):
        CLIP's share of the geometric mean for seen classes.
    ensemble_beta (`float`, *optional*, defaults to 0.8):
        CLIP's share of the geometric mean for unseen classes.
    mase_iou_threshold (`float`, *optional*, defaults to 0.5):
        Minimum predicted IoU for a query to vote a class "seen" in this image (tau_iou).
    mase_confidence_threshold (`float`, *optional*, defaults to 0.5):
        Minimum LDP probability for that vote (tau_conf).
    mase_void_threshold (`float`, *optional*, defaults to 0.5):
        Queries whose void probability reaches this do not vote.
    iou_score_exponent (`float`, *optional*, defaults to 1.0):
        Exponent gamma of the predicted IoU in a query's score (score = class probability * IoU ** gamma).
    """

    model_type = "possam"
    # Output fields transformers' Trainer leaves out of the predictions it hands to `compute_metrics` (loss
    # components, intermediate predictions, features): what remains is what post-processing reads.
    keys_to_ignore_at_inference = ["loss_dict", "auxiliary_predictions", "image_features", "mask_features"]
    sub_configs_defaults = {
        "sam_vision_config": SamVisionConfig,
        "sam_prompt_encoder_config": SamPromptEncoderConfig,
        "sam_mask_decoder_config": SamMaskDecoderConfig,
        "clip_config": PosSamClipConfig,
    }

    sam_vision_config: dict | PreTrainedConfig | None = None
    sam_prompt_encoder_config: dict | PreTrainedConfig | None = None
    sam_mask_decoder_config: dict | PreTrainedConfig | None = None
    clip_config: dict | PreTrainedConfig | None = None
    image_mean: list[float] | tuple[float, ...] = SAM_IMAGE_MEAN
    image_std: list[float] | tuple[float, ...] = SAM_IMAGE_STD
    sam_pretrained: str | None = None
    clip_pretrained: str | None = None

    fpn_hidden_size: int = 256
    feature_size: int = 256
    mask_feature_size: int = 256
    encoder_layers: int = 6
    encoder_feedforward_dim: int = 1024
    num_queries: int = 250
    hidden_dim: int = 256
    decoder_layers: int = 10
    num_attention_heads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.0
    pre_norm: bool = False
    init_std: float = 0.02
    init_xavier_std: float = 1.0

    iou_head_hidden_dim: int = 256
    iou_head_num_layers: int = 3

    ldp_fusion: Literal["self_attention", "sum", "concat_mlp", "none"] = "self_attention"
    ldp_layers: int = 1
    ldp_num_heads: int = 8
    ldp_intermediate_size: int = 2048
    ldp_hidden_size: int | None = None

    prompt_templates: list[str] | tuple[str, ...] = DEFAULT_PROMPT_TEMPLATES
    logit_scale_init_value: float = math.log(1 / 0.07)
    logit_scale_max: float = 100.0
    vocabulary: list[str] | None = None
    vocabulary_is_thing: list[bool] | None = None
    training_vocabulary: list[str] | None = None

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    iou_loss_weight: float = 1.0
    iou_target_unmatched: Literal["zero", "ignore"] = "zero"
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    use_auxiliary_loss: bool = True

    ensemble_mode: Literal["mase", "geometric", "ldp_only", "clip_only"] = "mase"
    ensemble_alpha: float = 0.4
    ensemble_beta: float = 0.8
    mase_iou_threshold: float = 0.5
    mase_confidence_threshold: float = 0.5
    mase_void_threshold: float = 0.5
    iou_score_exponent: float = 1.0

    def __post_init__(self, **kwargs):
        # `auto_map` and `custom_pipelines` describe the remote code a save writes (`to_json_string`), not this model.
        # A `custom_pipelines` entry makes `pipeline("open-vocab-panoptic", ...)` demand `trust_remote_code=True`
        # even though `import possam` registered the task, so it is kept only where transformers loaded PosSAM as
        # remote code: there it lets `pipeline(model=folder, trust_remote_code=True)` infer the task.
        kwargs.pop("auto_map", None)
        custom_pipelines = kwargs.pop("custom_pipelines", None)
        if custom_pipelines and remote_code_in_use():
            kwargs["custom_pipelines"] = custom_pipelines
        if self.vocabulary is None:
            default = load_vocabulary("coco_panoptic")
            self.vocabulary = default.entries
            if self.vocabulary_is_thing is None:
                self.vocabulary_is_thing = list(default.is_thing)
        if self.vocabulary_is_thing is None:
            self.vocabulary_is_thing = [True] * len(self.vocabulary)
        self.prompt_templates = list(self.prompt_templates)
        self.image_mean, self.image_std = list(self.image_mean), list(self.image_std)
        self._default_sam_prompt_configs()
        super().__post_init__(**kwargs)
        if self.ldp_hidden_size is None:
            self.ldp_hidden_size = self.clip_config.projection_dim
        self.id2label = {index: entry.split(",")[0] for index, entry in enumerate(self.vocabulary)}
        self.label2id = {label: index for index, label in self.id2label.items()}

    def _default_sam_prompt_configs(self) -> None:
        # SAM's promptable decoder works on the image encoder's neck output, so its width and input size follow the
        # encoder's; this also lets configs saved before these fields existed load with a consistent decoder.
        vision = self.sam_vision_config
        if vision is None:
            vision = SamVisionConfig()
        elif isinstance(vision, dict):
            vision = SamVisionConfig(**vision)
        if self.sam_prompt_encoder_config is None:
            self.sam_prompt_encoder_config = {
                "hidden_size": vision.output_channels,
                "image_size": vision.image_size,
                "patch_size": vision.patch_size,
            }
        if self.sam_mask_decoder_config is None:
            self.sam_mask_decoder_config = {"hidden_size": vision.output_channels}

    def to_sam_config(self) -> SamConfig:
        """The `SamConfig` that transformers' `SamPromptEncoder` reads (it needs the vision config's positional
        embedding settings as well as its own)."""
        return SamConfig(
            vision_config=self.sam_vision_config.to_dict(),
            prompt_encoder_config=self.sam_prompt_encoder_config.to_dict(),
            mask_decoder_config=self.sam_mask_decoder_config.to_dict(),
        )

    def to_json_string(self, use_diff: bool = True) -> str:
        """The JSON of `config.json`: the fields, plus the `auto_map` and `custom_pipelines` of PosSAM's remote code."""
        values = json.loads(super().to_json_string(use_diff))
        values.update(auto_map=dict(CONFIG_AUTO_MAP), custom_pipelines=json.loads(json.dumps(CUSTOM_PIPELINES)))
        return json.dumps(values, indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """Writes `config.json`, the remote-code modules it names and the folder's model card (`README.md`, see
        `possam.model_card`); every model save goes through here."""
        if os.path.isfile(save_directory):
            raise AssertionError(f"Provided path ({save_directory}) should be a directory, not a file")
        # Imported here: the card renderer builds the model (on the meta device) to count its parameters.
        from ..model_card import config_parameter_counts, write_model_card

        write_remote_code(save_directory, CONFIG_AUTO_MAP, CUSTOM_PIPELINES)
        write_model_card(os.fspath(save_directory), self, config_parameter_counts(self))
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The CLIP text tower's config: PosSAM's only text input is the class names it embeds."""
        return self.clip_config.text_config

    @property
    def image_size(self) -> int:
        """Side of the square input the SAM encoder requires (1024 for the public SAM checkpoints)."""
        size = self.sam_vision_config.image_size
        return size if isinstance(size, int) else size[0]

    def validate_field_values(self):
        # Types and choices are checked here, at construction and so when a config.json is loaded, not at the first
        # forward pass that reads the field.
        for name in ("ldp_fusion", "iou_target_unmatched", "ensemble_mode"):
            # The allowed values are the field's `Literal[...]` annotation (a string under `from __future__`).
            choices = typing.get_args(eval(PosSamConfig.__annotations__[name], {"Literal": Literal}))
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}.")
        for name in _POSITIVE_INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in _NON_NEGATIVE_NUMBER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
        for name in ("dropout", "importance_sample_ratio", "mase_void_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        for name in ("pre_norm", "use_auxiliary_loss"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}.")

    def validate_decoder(self):
        if self.feature_size % 32 or self.fpn_hidden_size % 32:
            raise ValueError(
                f"feature_size ({self.feature_size}) and fpn_hidden_size ({self.fpn_hidden_size}) must be multiples "
                "of 32: the Mask2Former pixel decoder normalizes them with GroupNorm(32)."
            )
        if self.decoder_layers < 1:
            raise ValueError(f"decoder_layers must be >= 1 (the initial prediction), got {self.decoder_layers}.")
        if self.hidden_dim % self.num_attention_heads:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by num_attention_heads ({self.num_attention_heads})."
            )
        if self.sam_vision_config.patch_size != 16:
            raise ValueError(
                f"sam_vision_config.patch_size must be 16 (the FPN builds strides 4-32 from a stride-16 map), got "
                f"{self.sam_vision_config.patch_size}."
            )
        if self.image_size % 32:
            raise ValueError(f"The SAM image_size must be a multiple of 32, got {self.image_size}.")

    def validate_sam_prompt_decoder(self):
        vision, prompt, decoder = self.sam_vision_config, self.sam_prompt_encoder_config, self.sam_mask_decoder_config
        expected = {
            "sam_prompt_encoder_config.hidden_size": (prompt.hidden_size, vision.output_channels),
            "sam_mask_decoder_config.hidden_size": (decoder.hidden_size, vision.output_channels),
            "sam_prompt_encoder_config.image_size": (prompt.image_size, vision.image_size),
            "sam_prompt_encoder_config.patch_size": (prompt.patch_size, vision.patch_size),
            "2 * sam_vision_config.num_pos_feats": (2 * vision.num_pos_feats, vision.output_channels),
        }
        for name, (value, wanted) in expected.items():
            if value != wanted:
                raise ValueError(
                    f"{name} ({value}) must equal {wanted}: SAM's prompt encoder and mask decoder work on the image "
                    "encoder's neck output (sam_vision_config.output_channels channels, image_size, patch_size)."
                )

    def validate_ldp(self):
        clip_dim = self.clip_config.projection_dim
        if self.ldp_hidden_size != clip_dim:
            raise ValueError(
                f"ldp_hidden_size ({self.ldp_hidden_size}) must equal the CLIP embedding dim "
                f"clip_config.projection_dim ({clip_dim}): LDP region embeddings are compared with CLIP text "
                "embeddings."
            )
        if self.ldp_hidden_size % self.ldp_num_heads:
            raise ValueError(
                f"ldp_hidden_size ({self.ldp_hidden_size}) must be divisible by ldp_num_heads ({self.ldp_num_heads})."
            )
        if self.ldp_layers < 1 and self.ldp_fusion == "self_attention":
            raise ValueError("ldp_layers must be >= 1 with ldp_fusion='self_attention'.")

    def validate_text_classifier(self):
        bad = [template for template in self.prompt_templates if template.count("{}") != 1]
        if not self.prompt_templates or bad:
            raise ValueError(f"Every prompt template must contain '{{}}' exactly once; offending templates: {bad}.")
        if not self.vocabulary:
            raise ValueError("The default vocabulary is empty: give at least one class.")
        if len(self.vocabulary_is_thing) != len(self.vocabulary):
            raise ValueError(
                f"vocabulary_is_thing has {len(self.vocabulary_is_thing)} entries, vocabulary has "
                f"{len(self.vocabulary)} classes."
            )

    def validate_ensemble(self):
        for name in ("ensemble_alpha", "ensemble_beta", "mase_iou_threshold", "mase_confidence_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}.")
        if self.ensemble_mode == "geometric" and not self.training_vocabulary:
            raise ValueError("ensemble_mode='geometric' needs training_vocabulary (the class names seen in training).")

    def to_mask2former_config(self) -> Mask2FormerConfig:
        """The `Mask2FormerConfig` that PosSAM's reused Mask2Former modules (pixel decoder, decoder, loss) read."""
        return Mask2FormerConfig(
            feature_size=self.feature_size,
            mask_feature_size=self.mask_feature_size,
            hidden_dim=self.hidden_dim,
            encoder_feedforward_dim=self.encoder_feedforward_dim,
            encoder_layers=self.encoder_layers,
            decoder_layers=self.decoder_layers,
            num_attention_heads=self.num_attention_heads,
            dropout=self.dropout,
            dim_feedforward=self.dim_feedforward,
            pre_norm=self.pre_norm,
            num_queries=self.num_queries,
            no_object_weight=self.no_object_weight,
            class_weight=self.class_weight,
            mask_weight=self.mask_weight,
            dice_weight=self.dice_weight,
            train_num_points=self.train_num_points,
            oversample_ratio=self.oversample_ratio,
            importance_sample_ratio=self.importance_sample_ratio,
            init_std=self.init_std,
            init_xavier_std=self.init_xavier_std,
            use_auxiliary_loss=self.use_auxiliary_loss,
            feature_strides=[4, 8, 16, 32],
            common_stride=4,
        )
