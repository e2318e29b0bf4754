"""PosSAM: Panoptic Open-vocabulary Segment Anything (arXiv 2403.09620).

Masks come from the frozen SAM image encoder through a feature pyramid, Mask2Former's pixel decoder and its
masked-attention decoder; each mask is named by Local Discriminative Pooling (LDP) against CLIP text embeddings of
any vocabulary; an IoU head rates each mask; at inference the Mask-Aware Selective Ensemble (MASE) combines LDP with
frozen CLIP's own region classification (in post-processing: `processing/mase.py`). This file only wires the parts together; each concept has its own module.

    pixels -> SAM (frozen) -> FPN -> pixel decoder -> masked-attention decoder -> masks, query states
    pixels -> CLIP vision (frozen) --------------------------------> dense features --+
    masks + query states + dense features -> IoU head, LDP -> class logits  <---------+-- CLIP text (frozen, cached)
"""


import os

import torch
from torch import nn
from transformers import PreTrainedModel, SamVisionModel
from transformers.models.sam.modeling_sam import SamPositionalEmbedding
from transformers import initialization as init
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerMaskedAttentionDecoderLayer,
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerPredictionBlock,
    Mask2FormerPreTrainedModel,
    Mask2FormerTransformerModule,
)
from transformers.utils.generic import can_return_tuple

from .backbones import build_from_pretrained_backbones
from .clip_towers import PosSamClip
from .configuration import PosSamConfig
from .configuration.remote_code import SavesRemoteCode
from .decoder import PosSamTransformerDecoder, ResizedMaskFeatures
from .pixel_decoder import PosSamPixelDecoder
from .fpn import PosSamFeaturePyramid
from .heads import PosSamIouHead
from .loading import load_pretrained
from .ldp import PosSamLocalDiscriminativePooling
from .loss import PosSamLoss
from .mask_pooling import mask_pool, pooling_weights
from .outputs import (
    PosSamDecoderOutput,
    PosSamImageFeatures,
    PosSamOutput,
    PosSamPanopticQueries,
    PosSamPromptOutput,
    PosSamTextEmbeddings,
)
from .prompt_decoder import PosSamPromptDecoder
from .prompt_regions import matching_query_index
from .text_classifier import (
    PosSamTextClassifier,
    average_prompt_embeddings,
    vocabulary_digest,
)


# Mask2Former modules whose initialization (deformable-attention sampling grid, Xavier decoder layers) PosSAM reuses.
_MASK2FORMER_INITIALIZED = (
    Mask2FormerTransformerModule,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerMaskedAttentionDecoderLayer,
    Mask2FormerPixelDecoder,
    Mask2FormerPredictionBlock,
)

# Prompts encoded per text-tower call: bounds memory for 800+ class vocabularies.
TEXT_BATCH_SIZE = 512


class PosSamPreTrainedModel(SavesRemoteCode, PreTrainedModel):
    config: PosSamConfig
    base_model_prefix = "possam"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    # SAM's and CLIP's attention run through the attention interface (eager or SDPA); Mask2Former's decoder and LDP
    # use their own attention, unaffected by the setting.
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _no_split_modules = [
        "SamVisionLayer",
        "ConvNextStage",
        "CLIPEncoderLayer",
        "PosSamPixelDecoderEncoderLayer",
        "Mask2FormerMaskedAttentionDecoderLayer",
    ]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, strict: bool = True, **kwargs):
        """transformers' `from_pretrained`, strict: a missing local folder, a foreign or invalid config, an unreadable
        weights file, and weights missing from, left over in or mis-shaped in the checkpoint raise a one-line
        `possam.loading.ModelLoadError` naming the file (see `possam.loading`). `strict=False` initializes missing
        or mis-shaped weights freshly instead, as transformers does by default."""
        load = super().from_pretrained
        return load_pretrained(
            lambda name, **options: load(name, *model_args, **options), pretrained_model_name_or_path, strict, **kwargs
        )

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False):
        # transformers treats models defined outside the library as custom code and then skips every module without
        # parameters of its own, assuming custom `_init_weights` overwrite loaded tensors. That would skip Mask2Former's
        # deformable-attention and decoder-layer initialization and LDP's zero projection. `_init_weights` below only
        # uses `transformers.initialization`, which leaves loaded tensors alone, so the heuristic is not needed.
        super()._initialize_weights(module, is_custom_code=False)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        if isinstance(module, _MASK2FORMER_INITIALIZED):
            Mask2FormerPreTrainedModel._init_weights(self, module)
            if isinstance(module, Mask2FormerTransformerModule):
                for embedding in (module.queries_embedder, module.queries_features, module.level_embed):
                    Mask2FormerPreTrainedModel._init_weights(self, embedding)
        elif isinstance(module, PosSamLocalDiscriminativePooling):
            for layer in module.zero_initialized_layers():
                init.zeros_(layer.weight)
                init.zeros_(layer.bias)
        elif isinstance(module, PosSamTextClassifier):
            init.normal_(module.void_embedding.weight, std=self.config.init_std)
            init.zeros_(module.default_synonym_embeddings)
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, PosSamClip):
            init.constant_(module.logit_scale, self.config.clip_config.logit_scale_init_value)
        elif isinstance(module, SamPositionalEmbedding):
            init.normal_(module.positional_embedding, std=module.scale)
        else:
            super()._init_weights(module)


class PosSamModel(PosSamPreTrainedModel):
    """PosSAM for open-vocabulary panoptic, instance and semantic segmentation.

    The SAM and CLIP towers are frozen: they get no gradients, hold no optimizer state (their parameters have
    `requires_grad=False`) and stay in eval mode when the model is put in training mode. So is SAM's promptable decoder
    (`sam_prompt_decoder`: prompt encoder + mask decoder), used only by `segment_prompts`.
    """

    def __init__(self, config: PosSamConfig):
        super().__init__(config)
        self.sam = SamVisionModel(config.sam_vision_config)
        self.clip = PosSamClip(config.clip_config)
        self.fpn = PosSamFeaturePyramid(config.sam_vision_config.output_channels, config.fpn_hidden_size)
        mask2former_config = config.to_mask2former_config()
        self.pixel_decoder = PosSamPixelDecoder(mask2former_config, feature_channels=[config.fpn_hidden_size] * 4)
        self.transformer_decoder = PosSamTransformerDecoder(in_features=config.feature_size, config=mask2former_config)
        self.iou_head = PosSamIouHead(config)
        self.ldp = PosSamLocalDiscriminativePooling(config)
        self.text_classifier = PosSamTextClassifier(config)
        self.criterion = PosSamLoss(config)
        # Registered last and built on a forked RNG: adding SAM's prompt decoder leaves the random initialization of
        # every other part, hence seeded models (tests, the demo), exactly as they were.
        with torch.random.fork_rng(devices=[]):
            self.sam_prompt_decoder = PosSamPromptDecoder(config)
        self.post_init()
        self.freeze_towers()
        # Cached text embeddings belong to the weights they were computed with.
        self.register_load_state_dict_post_hook(lambda module, incompatible_keys: module.text_classifier.clear_cache())

    def freeze_towers(self) -> None:
        """Freezes the SAM and CLIP towers and SAM's prompt decoder (`requires_grad=False`): no gradients, no
        optimizer state, and no parameters that DDP waits for. Called by `__init__` and again after every
        `from_pretrained`."""
        self.sam.requires_grad_(False)
        self.sam_prompt_decoder.requires_grad_(False)
        self.clip.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # transformers' loader replaces every loaded tensor by a new `nn.Parameter(requires_grad=True)` after
        # `__init__` has run (5.23, 5.24), whatever the dtype or device map, which would unfreeze both towers.
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.freeze_towers()
        _preload_attention_projections(model)
        return loaded

    @classmethod
    def from_pretrained_backbones(
        cls,
        sam: str | os.PathLike,
        clip: str | os.PathLike,
        config: PosSamConfig | str | None = None,
        sam_kwargs: dict | None = None,
        clip_kwargs: dict | None = None,
        **config_overrides,
    ) -> "PosSamModel":
        """Builds an untrained PosSAM on pretrained SAM and CLIP towers; `save_pretrained` then writes one checkpoint.

        The towers' configurations come from their checkpoints and their weights are loaded strictly (a checkpoint
        that does not fit raises `CheckpointError` listing the missing, unexpected and mis-shaped keys); everything
        PosSAM trains is freshly initialized. See `possam.backbones` for the supported checkpoint forms.

        Args:
            sam: Hub id or local folder of a transformers SAM (`"facebook/sam-vit-base"`), or Meta's original `.pth`.
            clip: Hub id or local folder of a transformers `CLIPModel` or of converted PosSAM CLIP towers, or an
                OpenCLIP ConvNeXt checkpoint file (FC-CLIP's `convnext_large_d_320`).
            config: settings of the trainable parts: a `PosSamConfig`, a preset name (`"tiny"`, `"base"`, `"large"`,
                `"huge"`), or `None` for the `"base"` preset's.
            sam_kwargs, clip_kwargs: loading arguments: `from_pretrained` arguments (`revision`, `token`, ...) for
                Hub ids and folders; for files, `SamVisionConfig` overrides (SAM) or `text_head_dim` /
                `text_hidden_act` (OpenCLIP).
            config_overrides: `PosSamConfig` fields to set (dicts are merged into sub-configurations).
        """
        return build_from_pretrained_backbones(cls, sam, clip, config, sam_kwargs, clip_kwargs, **config_overrides)

    def train(self, mode: bool = True):
        super().train(mode)
        self.sam.eval()
        self.sam_prompt_decoder.eval()
        self.clip.eval()
        return self

    # ------------------------------------------------------------------ reusable sub-computations

    @torch.no_grad()
    def get_image_features(self, pixel_values: torch.FloatTensor) -> PosSamImageFeatures:
        """Runs the frozen SAM and CLIP image towers once; pass the result to `forward(image_features=...)` to
        classify the same images with other vocabularies without running the towers again.

        Args:
            pixel_values: `(batch, 3, S, S)` SAM-normalized, zero-padded images (`PosSamImageProcessor`), S =
                `config.image_size`.
        """
        self._check_pixel_values(pixel_values)
        # Processors return float32; a model loaded in bf16/fp16 computes in its own dtype.
        pixel_values = pixel_values.to(self.sam.dtype)
        sam_image_embeddings = self.sam(pixel_values=pixel_values).last_hidden_state
        mean, std = (
            torch.tensor(values, device=pixel_values.device, dtype=pixel_values.dtype).view(1, 3, 1, 1)
            for values in (self.config.image_mean, self.config.image_std)
        )
        pixels_0_255 = pixel_values * std + mean
        clip_image_features = self.clip.vision.dense_features(self.clip.normalize_pixels(pixels_0_255))
        return PosSamImageFeatures(sam_image_embeddings=sam_image_embeddings, clip_image_features=clip_image_features)

    def get_text_embeddings(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        prompt_to_synonym: torch.LongTensor,
        synonym_to_class: torch.LongTensor,
    ) -> PosSamTextEmbeddings:
        """Embeds a tokenized vocabulary (`PosSamProcessor` output) with the frozen CLIP text tower.

        The result is cached by content: asking again for the same vocabulary does not run the text tower.

        Args:
            input_ids: `(num_prompts, length)` token ids of every (class name, template) prompt.
            attention_mask: `(num_prompts, length)`, 1 on real tokens.
            prompt_to_synonym: `(num_prompts,)` the class name each prompt was built from.
            synonym_to_class: `(num_synonyms,)` the class each name belongs to (0..C-1, every class present).
        """
        self._check_vocabulary(input_ids, attention_mask, prompt_to_synonym, synonym_to_class)
        key_tensors = (input_ids, prompt_to_synonym, synonym_to_class) + (() if attention_mask is None else (attention_mask,))
        key = vocabulary_digest(*key_tensors)
        device = self._text_device()
        cached = self.text_classifier.cached(key)
        if cached is None:
            cached = self.text_classifier.load_from_disk(key, self.clip.text)
            if cached is not None:
                self.text_classifier.remember(key, cached)
        if cached is None:
            with torch.no_grad():
                prompt_embeddings = torch.cat(
                    [
                        self.clip.encode_text(
                            input_ids[start : start + TEXT_BATCH_SIZE].to(device),
                            None if attention_mask is None else attention_mask[start : start + TEXT_BATCH_SIZE].to(device),
                        )
                        for start in range(0, input_ids.shape[0], TEXT_BATCH_SIZE)
                    ]
                )
                cached = average_prompt_embeddings(prompt_embeddings, prompt_to_synonym.to(device), synonym_to_class.to(device))
            self.text_classifier.remember(key, cached)
            self.text_classifier.save_to_disk(key, self.clip.text, cached)
        return PosSamTextEmbeddings(
            synonym_embeddings=cached.synonym_embeddings.to(device), synonym_to_class=cached.synonym_to_class.to(device)
        )

    def compile_stages(self, stages: tuple[str, ...] = ("fpn", "pixel_decoder", "transformer_decoder"), **compile_kwargs) -> None:
        """Compiles PosSAM's heavy stages in place with `torch.compile` (each traces into one graph).

        The first call of each compiled stage compiles it (about a minute for the pixel decoder on a CPU); later calls
        reuse the compiled code as long as input shapes do not change. Pass `"sam"` or `"clip"` in `stages` to
        compile the frozen towers too. `compile_kwargs` go to `torch.compile` (e.g. `mode="max-autotune"`).
        """
        for name in stages:
            getattr(self, name).compile(**compile_kwargs)

    def set_default_vocabulary(
        self,
        vocabulary: list[str],
        is_thing: list[bool],
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        prompt_to_synonym: torch.LongTensor,
        synonym_to_class: torch.LongTensor,
    ) -> None:
        """Makes `vocabulary` the one used when `forward` gets no text, storing its text embeddings in the weights.

        Args:
            vocabulary: one entry per class, names comma-separated ("person,child,girl").
            is_thing: thing (True) / stuff (False) flag per class.
            input_ids, attention_mask, prompt_to_synonym, synonym_to_class: the vocabulary tokenized by
                `PosSamProcessor`, in the same class order.
        """
        names = [name for entry in vocabulary for name in entry.split(",")]
        if len(names) != synonym_to_class.shape[0] or len(is_thing) != len(vocabulary):
            raise ValueError(
                f"The vocabulary has {len(vocabulary)} classes and {len(names)} names, but the tokenized inputs "
                f"describe {synonym_to_class.shape[0]} names and is_thing has {len(is_thing)} flags."
            )
        text = self.get_text_embeddings(input_ids, attention_mask, prompt_to_synonym, synonym_to_class)
        self.config.vocabulary = list(vocabulary)
        self.config.vocabulary_is_thing = [bool(flag) for flag in is_thing]
        self.config.id2label = {index: entry.split(",")[0] for index, entry in enumerate(vocabulary)}
        self.config.label2id = {label: index for index, label in self.config.id2label.items()}
        self.text_classifier.default_synonym_embeddings = text.synonym_embeddings.detach().clone()

    # ------------------------------------------------------------------ promptable segmentation

    @torch.no_grad()
    def segment_prompts(
        self,
        image_features: PosSamImageFeatures,
        input_points: torch.FloatTensor | None = None,
        input_labels: torch.LongTensor | None = None,
        input_boxes: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        prompt_to_synonym: torch.LongTensor | None = None,
        synonym_to_class: torch.LongTensor | None = None,
        synonym_embeddings: torch.FloatTensor | None = None,
        multimask_output: bool = True,
    ) -> PosSamPromptOutput:
        r"""Masks for point and box prompts from SAM's own (frozen) prompt encoder and mask decoder, each named over an
        open vocabulary by PosSAM's classifier (see `possam.prompt_regions`). Works on cached image features: neither
        the towers nor (once `image_features.panoptic_queries` is filled) PosSAM's decoders run again.

        Args:
            image_features ([`PosSamImageFeatures`]): `get_image_features(pixel_values)`, or the `image_features` of a
                previous `segment_prompts` / `forward(output_image_features=True)` call on the same images.
            input_points (`(batch, P, N, 2)`, *optional*): N points (x, y) per prompt, in pixels of the padded model
                input (`PosSamProcessor(images, input_points=...)` maps image coordinates there).
            input_labels (`(batch, P, N)`, *optional*): 1 foreground, 0 background, -10 padding; all 1 if omitted.
            input_boxes (`(batch, P, 4)`, *optional*): one box (x0, y0, x1, y1) per prompt, same frame; given with
                points, prompt p uses box p and the points of prompt p.
            input_ids, attention_mask, prompt_to_synonym, synonym_to_class, synonym_embeddings: the vocabulary, as in
                `forward`; the model's default vocabulary without them.
            multimask_output (`bool`, defaults to `True`): SAM's three candidate masks per prompt, else one.

        The class ensemble, as for panoptic outputs, is post-processing (`post_process_prompt_segmentation`, with SAM's
        predicted IoU in place of PosSAM's).
        """
        points, labels, boxes = self._check_prompts(image_features, input_points, input_labels, input_boxes)
        text = self._text_embeddings(input_ids, attention_mask, prompt_to_synonym, synonym_to_class, synonym_embeddings)
        if image_features.panoptic_queries is None:
            image_features = self._decode_panoptic_queries(image_features)
        queries = image_features.panoptic_queries

        embeddings = image_features.sam_image_embeddings.to(self.sam_prompt_decoder.mask_decoder.iou_token.weight.dtype)
        pred_masks, iou_scores = self.sam_prompt_decoder(embeddings, points, labels, boxes, multimask_output)
        batch_size, num_prompts, num_masks = iou_scores.shape
        regions = pred_masks.flatten(1, 2).to(queries.mask_features.dtype)
        if regions.shape[-2:] != queries.mask_features.shape[-2:]:
            regions = nn.functional.interpolate(
                regions, size=queries.mask_features.shape[-2:], mode="bilinear", align_corners=False
            )
        class_logits, clip_logits = self._classify_regions(regions, queries, image_features.clip_image_features, text)
        per_prompt = (batch_size, num_prompts, num_masks, -1)
        return PosSamPromptOutput(
            pred_masks=pred_masks,
            iou_scores=iou_scores,
            class_queries_logits=class_logits.view(per_prompt),
            clip_logits=clip_logits.view(per_prompt),
            image_features=image_features,
        )

    def _classify_regions(self, region_masks, queries: PosSamPanopticQueries, clip_features, text):
        """`(batch, R, h, w)` mask logits of arbitrary regions -> LDP logits `(batch, R, C + 1)`, CLIP logits
        `(batch, R, C)`; the regions join the image's K queries in LDP (see `possam.prompt_regions`)."""
        pooled = mask_pool(queries.mask_features, pooling_weights(region_masks))
        clip_masks = nn.functional.interpolate(
            region_masks, size=clip_features.shape[-2:], mode="bilinear", align_corners=False
        )
        clip_regions = self.clip.vision.embed_regions(mask_pool(clip_features, pooling_weights(clip_masks)))
        borrowed = matching_query_index(region_masks, queries.masks_queries_logits)
        query_states = queries.query_states.gather(1, borrowed[..., None].expand(-1, -1, queries.query_states.shape[-1]))
        num_queries = queries.query_states.shape[1]
        fused = self.ldp(
            torch.cat([queries.clip_region_embeddings, clip_regions.to(queries.clip_region_embeddings.dtype)], dim=1),
            torch.cat([queries.pooled_mask_features, pooled], dim=1),
            torch.cat([queries.query_states, query_states], dim=1),
        )[:, num_queries:]
        return self.text_classifier(fused, text), self.clip(clip_regions, text, self.config.logit_scale_max)

    def _decode_panoptic_queries(self, image_features: PosSamImageFeatures) -> PosSamImageFeatures:
        """Runs the FPN, pixel decoder and decoder (last prediction only) to fill `image_features.panoptic_queries`."""
        pyramid = self.fpn(image_features.sam_image_embeddings)
        pixel_decoder_output = self.pixel_decoder(list(pyramid))
        decoded = self.transformer_decoder(
            pixel_decoder_output.multi_scale_features, pixel_decoder_output.mask_features, full_resolution_masks=False
        )
        last = len(decoded.query_states) - 1
        clip_features = image_features.clip_image_features
        clip_masks = ResizedMaskFeatures(decoded.mask_features).mask_logits(
            decoded.mask_embeddings[last], clip_features.shape[-2:]
        )
        clip_region_embeddings = self.clip.vision.embed_regions(mask_pool(clip_features, pooling_weights(clip_masks)))
        return self._with_panoptic_queries(
            image_features, decoded.mask_features, decoded.query_states[last], decoded.masks_queries_logits[last],
            clip_region_embeddings,
        )

    @staticmethod
    def _with_panoptic_queries(image_features, mask_features, query_states, masks, clip_region_embeddings):
        queries = PosSamPanopticQueries(
            mask_features=mask_features.detach(),
            query_states=query_states.detach(),
            masks_queries_logits=masks.detach(),
            clip_region_embeddings=clip_region_embeddings.detach(),
            pooled_mask_features=mask_pool(mask_features.detach(), pooling_weights(masks)),
        )
        return PosSamImageFeatures(
            sam_image_embeddings=image_features.sam_image_embeddings,
            clip_image_features=image_features.clip_image_features,
            panoptic_queries=queries,
        )

    def _check_prompts(self, image_features, input_points, input_labels, input_boxes):
        if image_features is None or image_features.sam_image_embeddings is None:
            raise ValueError("segment_prompts needs image_features (model.get_image_features(pixel_values)).")
        batch_size = image_features.sam_image_embeddings.shape[0]
        if input_points is None and input_boxes is None:
            raise ValueError("segment_prompts needs input_points and/or input_boxes: nothing to segment.")
        device = image_features.sam_image_embeddings.device
        if input_points is not None:
            input_points = torch.as_tensor(input_points, dtype=torch.float32, device=device)
            if input_points.ndim != 4 or input_points.shape[-1] != 2 or input_points.shape[0] != batch_size:
                raise ValueError(
                    f"input_points must have shape (batch={batch_size}, prompts, points_per_prompt, 2), got "
                    f"{tuple(input_points.shape)}."
                )
            if input_labels is None:
                input_labels = torch.ones(input_points.shape[:-1], dtype=torch.long, device=device)
            input_labels = torch.as_tensor(input_labels, dtype=torch.long, device=device)
            if input_labels.shape != input_points.shape[:-1]:
                raise ValueError(
                    f"input_labels must have shape {tuple(input_points.shape[:-1])} (one label per point), got "
                    f"{tuple(input_labels.shape)}."
                )
        elif input_labels is not None:
            raise ValueError("input_labels were given without input_points.")
        if input_boxes is not None:
            input_boxes = torch.as_tensor(input_boxes, dtype=torch.float32, device=device)
            if input_boxes.ndim != 3 or input_boxes.shape[-1] != 4 or input_boxes.shape[0] != batch_size:
                raise ValueError(
                    f"input_boxes must have shape (batch={batch_size}, prompts, 4), got {tuple(input_boxes.shape)}."
                )
            if input_points is not None and input_points.shape[1] != input_boxes.shape[1]:
                raise ValueError(
                    f"With both points and boxes, prompt p combines box p with the points of prompt p: got "
                    f"{input_points.shape[1]} point prompts and {input_boxes.shape[1]} boxes."
                )
        return input_points, input_labels, input_boxes

    # ------------------------------------------------------------------ forward

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        prompt_to_synonym: torch.LongTensor | None = None,
        synonym_to_class: torch.LongTensor | None = None,
        synonym_embeddings: torch.FloatTensor | None = None,
        image_features: PosSamImageFeatures | None = None,
        mask_labels: list[torch.Tensor] | None = None,
        class_labels: list[torch.LongTensor] | None = None,
        ignore_mask: torch.Tensor | list[torch.Tensor] | None = None,
        output_auxiliary_logits: bool | None = None,
        output_image_features: bool | None = None,
        output_hidden_states: bool | None = None,
        original_sizes: torch.LongTensor | None = None,
        reshaped_input_sizes: torch.LongTensor | None = None,
    ) -> PosSamOutput:
        r"""
        Args:
            pixel_values (`(batch, 3, S, S)`): SAM-normalized, zero-padded images from `PosSamImageProcessor`;
                S = `config.image_size` (1024). Not needed when `image_features` is given.
            pixel_mask (`(batch, S, S)`, *optional*): 1 on image pixels, 0 on padding; padding is excluded from
                the mask and IoU losses (predictions cover the whole canvas, as in Mask2Former).
            input_ids, attention_mask, prompt_to_synonym, synonym_to_class: the vocabulary of this call as tokenized
                by `PosSamProcessor` (any number of classes; a class's logit is the max over its names). Without any
                text input the model's default vocabulary (`config.vocabulary`) is used.
            synonym_embeddings (`(num_synonyms, D)`, *optional*): precomputed text embeddings
                (`get_text_embeddings(...).synonym_embeddings`), with `synonym_to_class`, instead of `input_ids`.
            image_features ([`PosSamImageFeatures`], *optional*): precomputed `get_image_features(pixel_values)`.
            mask_labels (`list[(num_segments_i, S, S)]`, *optional*): binary ground-truth masks per image.
            class_labels (`list[(num_segments_i,)]`, *optional*): their class indices into this call's vocabulary.
            ignore_mask (`(batch, S, S)` or list, *optional*): True on pixels the losses ignore (crowd, void).
            output_auxiliary_logits (`bool`, *optional*): also return every intermediate prediction (they are computed
                for the loss in training anyway; the output's fields do not depend on train/eval mode).
            output_image_features (`bool`, *optional*): return the frozen towers' features for reuse.
            output_hidden_states (`bool`, *optional*): return the pixel decoder's `mask_features`.
            original_sizes, reshaped_input_sizes (*optional*): accepted so an image processor's whole output can be
                passed as `**inputs`; the model does not use them (post-processing does).
        """
        if image_features is None:
            if pixel_values is None:
                raise ValueError("Pass `pixel_values` (from PosSamImageProcessor) or precomputed `image_features`.")
            image_features = self.get_image_features(pixel_values)
        text = self._text_embeddings(input_ids, attention_mask, prompt_to_synonym, synonym_to_class, synonym_embeddings)
        labels_given = self._check_labels(mask_labels, class_labels, image_features, text)

        pyramid = self.fpn(image_features.sam_image_embeddings)
        pixel_decoder_output = self.pixel_decoder(list(pyramid))
        supervise_all = self.config.use_auxiliary_loss and labels_given
        return_all = supervise_all or bool(output_auxiliary_logits)
        decoded = self.transformer_decoder(
            pixel_decoder_output.multi_scale_features,
            pixel_decoder_output.mask_features,
            full_resolution_masks=return_all,
        )
        num_predictions = len(decoded.query_states)
        indices = range(num_predictions) if return_all else [num_predictions - 1]
        low_resolution = ResizedMaskFeatures(decoded.mask_features)
        predictions = [
            self._predict(decoded, index, low_resolution, image_features.clip_image_features, text) for index in indices
        ]
        final = predictions[-1]
        clip_region_embeddings = final.pop("clip_region_embeddings")
        clip_logits = self.clip(clip_region_embeddings, text, self.config.logit_scale_max)

        loss, loss_dict = None, None
        if labels_given:
            valid_mask = self._valid_mask(pixel_mask, ignore_mask)
            supervised = [
                {**prediction, "mask_embeddings": decoded.mask_embeddings[index]}
                for index, prediction in zip(indices, predictions)
            ]
            supervised = supervised if supervise_all else supervised[-1:]
            loss_dict = self.criterion(supervised, mask_labels, class_labels, valid_mask, decoded.mask_features)
            loss = self.criterion.total(loss_dict)

        default_vocabulary = input_ids is None and synonym_embeddings is None
        auxiliary = tuple({k: v for k, v in p.items() if k != "clip_region_embeddings"} for p in predictions[:-1])
        return PosSamOutput(
            loss=loss,
            loss_dict=loss_dict,
            class_queries_logits=final["class_queries_logits"],
            masks_queries_logits=final["masks_queries_logits"],
            iou_scores=final["iou_scores"],
            clip_logits=clip_logits,
            vocabulary_is_thing=self._default_is_thing(final["class_queries_logits"]) if default_vocabulary else None,
            auxiliary_predictions=auxiliary if output_auxiliary_logits else None,
            image_features=self._with_panoptic_queries(
                image_features, decoded.mask_features, decoded.query_states[-1], final["masks_queries_logits"],
                clip_region_embeddings,
            ) if output_image_features else None,
            mask_features=decoded.mask_features if output_hidden_states else None,
        )

    def _predict(
        self,
        decoded: PosSamDecoderOutput,
        index: int,
        low_resolution: ResizedMaskFeatures,
        clip_features: torch.Tensor,
        text: PosSamTextEmbeddings,
    ) -> dict[str, torch.Tensor]:
        """Class logits, IoU and CLIP region embeddings of one decoder prediction."""
        mask_features, masks = decoded.mask_features, decoded.masks_queries_logits[index]
        query_states = decoded.query_states[index]
        pooled_mask_features = mask_pool(mask_features, pooling_weights(masks))
        with torch.no_grad():
            clip_size = clip_features.shape[-2:]
            clip_masks = low_resolution.mask_logits(decoded.mask_embeddings[index], clip_size)
            clip_pooled = mask_pool(clip_features, pooling_weights(clip_masks))
            clip_region_embeddings = self.clip.vision.embed_regions(clip_pooled)
        region_embeddings = self.ldp(clip_region_embeddings, pooled_mask_features, query_states)
        return {
            "class_queries_logits": self.text_classifier(region_embeddings, text),
            "masks_queries_logits": masks,
            "iou_scores": self.iou_head(query_states, pooled_mask_features),
            "clip_region_embeddings": clip_region_embeddings,
        }

    def _default_is_thing(self, class_queries_logits: torch.Tensor) -> torch.BoolTensor:
        # One row per image, so that batch splitters (transformers' pipelines) can cut the output along dim 0.
        flags = torch.tensor(self.config.vocabulary_is_thing, device=class_queries_logits.device)
        return flags.expand(class_queries_logits.shape[0], -1)

    # ------------------------------------------------------------------ input handling

    def _text_embeddings(self, input_ids, attention_mask, prompt_to_synonym, synonym_to_class, synonym_embeddings):
        if synonym_embeddings is not None:
            if input_ids is not None:
                raise ValueError("Pass either `input_ids` or precomputed `synonym_embeddings`, not both.")
            if synonym_to_class is None or synonym_to_class.shape[0] != synonym_embeddings.shape[0]:
                raise ValueError(
                    "`synonym_embeddings` needs `synonym_to_class` with one class index per row: got "
                    f"{None if synonym_to_class is None else tuple(synonym_to_class.shape)} for "
                    f"{tuple(synonym_embeddings.shape)} embeddings."
                )
            _check_classes_present(synonym_to_class)
            device = self._text_device()
            return PosSamTextEmbeddings(synonym_embeddings=synonym_embeddings.to(device), synonym_to_class=synonym_to_class.to(device))
        if input_ids is not None:
            return self.get_text_embeddings(input_ids, attention_mask, prompt_to_synonym, synonym_to_class)
        if prompt_to_synonym is not None or synonym_to_class is not None:
            raise ValueError("`prompt_to_synonym` / `synonym_to_class` were given without `input_ids`.")
        return self.text_classifier.default_text_embeddings()

    def _text_device(self) -> torch.device:
        """Where text embeddings go: the text classifier's device, or, when offloading (`device_map` with CPU or disk
        offload) left its weights on `meta`, the execution device accelerate's hook loads them to."""
        device = self.text_classifier.logit_scale.device
        if device.type == "meta":
            hook = getattr(self.text_classifier, "_hf_hook", None)
            for candidate in getattr(hook, "hooks", [hook]):
                if getattr(candidate, "execution_device", None) is not None:
                    return torch.device(candidate.execution_device)
        return device

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        size = self.config.image_size
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3 or tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(
                f"pixel_values must have shape (batch, 3, {size}, {size}) — the SAM encoder's fixed input size — but "
                f"got {tuple(pixel_values.shape)}. Use PosSamImageProcessor, which resizes the longest side to {size} "
                "and pads."
            )

    def _check_vocabulary(self, input_ids, attention_mask, prompt_to_synonym, synonym_to_class) -> None:
        if prompt_to_synonym is None or synonym_to_class is None:
            raise ValueError("`input_ids` need `prompt_to_synonym` and `synonym_to_class` (all from PosSamProcessor).")
        if input_ids.ndim != 2 or input_ids.shape[0] == 0 or synonym_to_class.numel() == 0:
            raise ValueError(
                f"The vocabulary is empty or malformed: input_ids has shape {tuple(input_ids.shape)} (expected "
                "(num_prompts > 0, length)); give at least one class name."
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}.")
        if prompt_to_synonym.shape != input_ids.shape[:1]:
            raise ValueError(
                f"prompt_to_synonym has {prompt_to_synonym.shape[0]} entries for {input_ids.shape[0]} prompts."
            )
        if prompt_to_synonym.min() < 0 or prompt_to_synonym.max() >= synonym_to_class.shape[0]:
            raise ValueError(f"prompt_to_synonym must index the {synonym_to_class.shape[0]} synonyms.")
        if torch.bincount(prompt_to_synonym, minlength=synonym_to_class.shape[0]).min() == 0:
            raise ValueError("Every synonym needs at least one prompt in prompt_to_synonym.")
        _check_classes_present(synonym_to_class)

    def _check_labels(self, mask_labels, class_labels, image_features, text) -> bool:
        if mask_labels is None and class_labels is None:
            return False
        if mask_labels is None or class_labels is None:
            raise ValueError("Pass both `mask_labels` and `class_labels` for training, or neither.")
        batch_size = image_features.sam_image_embeddings.shape[0]
        if len(mask_labels) != batch_size or len(class_labels) != batch_size:
            raise ValueError(
                f"mask_labels and class_labels need one entry per image: batch of {batch_size}, got "
                f"{len(mask_labels)} mask_labels and {len(class_labels)} class_labels."
            )
        size = self.config.image_size
        for index, (masks, classes) in enumerate(zip(mask_labels, class_labels)):
            if masks.ndim != 3 or tuple(masks.shape[-2:]) != (size, size):
                raise ValueError(
                    f"mask_labels[{index}] must have shape (num_segments, {size}, {size}), got {tuple(masks.shape)}."
                )
            if classes.ndim != 1 or classes.shape[0] != masks.shape[0]:
                raise ValueError(
                    f"class_labels[{index}] has shape {tuple(classes.shape)} but mask_labels[{index}] has "
                    f"{masks.shape[0]} masks: one class per mask is required."
                )
            if classes.numel() and (classes.min() < 0 or classes.max() >= text.num_classes):
                raise ValueError(
                    f"class_labels[{index}] holds {classes.tolist()}, outside the vocabulary's {text.num_classes} "
                    "classes of this call."
                )
        return True

    def _valid_mask(self, pixel_mask, ignore_mask) -> torch.Tensor | None:
        valid = None if pixel_mask is None else pixel_mask.bool()
        if ignore_mask is not None:
            ignored = torch.stack(list(ignore_mask)) if isinstance(ignore_mask, (list, tuple)) else ignore_mask
            valid = ~ignored.bool() if valid is None else valid & ~ignored.bool().to(valid.device)
        return valid


def _preload_attention_projections(model: nn.Module) -> None:
    """Lets offloaded `nn.MultiheadAttention` modules (Mask2Former's decoder layers) load their `out_proj` weights.

    With CPU or disk offload (`device_map`), accelerate loads a module's weights when the module is called, but
    `nn.MultiheadAttention` reads `out_proj.weight` without calling `out_proj`. This is what accelerate's
    `preload_module_classes` option does, which transformers' loader does not pass: the attention's own hook also
    places its submodules' weights.
    """
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            hook = getattr(module, "_hf_hook", None)
            for align_hook in getattr(hook, "hooks", [hook]):
                if getattr(align_hook, "offload", False):
                    align_hook.place_submodules = True


def _check_classes_present(synonym_to_class: torch.LongTensor) -> None:
    if torch.compiler.is_exporting():
        # The check reads the values, which an exported graph cannot branch on; `possam.onnx_export` documents that
        # the exported graph takes the vocabulary as `PosSamTextEmbeddings` holds it. Eager calls always check.
        return
    if synonym_to_class.numel() == 0:
        raise ValueError("The vocabulary is empty: give at least one class name.")
    counts = torch.bincount(synonym_to_class.clamp(min=0))
    if synonym_to_class.min() < 0 or (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(
            f"synonym_to_class must map names to classes 0..C-1 with every class named; classes without a name: "
            f"{missing}."
        )
