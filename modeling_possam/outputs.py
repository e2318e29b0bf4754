"""Typed outputs of the PosSAM model and of its reusable sub-computations."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class PosSamPanopticQueries(ModelOutput):
    """The decoder's final queries of an image: vocabulary-independent, so prompts reuse them (see `segment_prompts`).

    Args:
        mask_features (`torch.FloatTensor` of shape `(batch_size, mask_feature_size, height / 4, width / 4)`):
            The pixel decoder's per-pixel embeddings.
        query_states (`torch.FloatTensor` of shape `(batch_size, K, hidden_dim)`):
            The last decoder layer's normalized query states.
        masks_queries_logits (`torch.FloatTensor` of shape `(batch_size, K, height / 4, width / 4)`):
            The queries' mask logits at stride 4.
        clip_region_embeddings (`torch.FloatTensor` of shape `(batch_size, K, embed_dim)`):
            LDP's CLIP stream of each query (CLIP features mask-pooled, through CLIP's region head).
        pooled_mask_features (`torch.FloatTensor` of shape `(batch_size, K, mask_feature_size)`):
            `mask_features` mean-pooled over each query's binarized mask (LDP's SAM stream input).
    """

    mask_features: torch.FloatTensor | None = None
    query_states: torch.FloatTensor | None = None
    masks_queries_logits: torch.FloatTensor | None = None
    clip_region_embeddings: torch.FloatTensor | None = None
    pooled_mask_features: torch.FloatTensor | None = None


@dataclass
class PosSamImageFeatures(ModelOutput):
    """Features of the frozen image towers; `PosSamModel.forward` accepts them instead of `pixel_values`.

    Args:
        sam_image_embeddings (`torch.FloatTensor` of shape `(batch_size, sam_channels, height / 16, width / 16)`):
            The SAM image encoder's neck output (256 channels for the public checkpoints): what the FPN and SAM's own
            mask decoder (`segment_prompts`) consume.
        clip_image_features (`torch.FloatTensor` of shape `(batch_size, clip_channels, h_clip, w_clip)`):
            The dense CLIP feature map that LDP mask-pools (ConvNeXt: last stage, stride 32, 1536 channels for
            ConvNeXt-L; ViT: projected patch tokens).
        panoptic_queries ([`PosSamPanopticQueries`], *optional*):
            The decoder's final queries, when the features come back from `forward(output_image_features=True)` or
            `segment_prompts`; prompts on the same image then run neither the towers nor the decoders again.
    """

    sam_image_embeddings: torch.FloatTensor | None = None
    clip_image_features: torch.FloatTensor | None = None
    panoptic_queries: PosSamPanopticQueries | None = None


@dataclass
class PosSamTextEmbeddings(ModelOutput):
    """The text classifier of one vocabulary: one embedding per class name (synonym), and each name's class.

    Args:
        synonym_embeddings (`torch.FloatTensor` of shape `(num_synonyms, embed_dim)`):
            L2-normalized CLIP text embeddings, averaged over the prompt templates and normalized again.
        synonym_to_class (`torch.LongTensor` of shape `(num_synonyms,)`):
            The class (0..C-1) each synonym belongs to; a class's logit is the max over its synonyms.
    """

    synonym_embeddings: torch.FloatTensor | None = None
    synonym_to_class: torch.LongTensor | None = None

    @property
    def num_classes(self) -> int:
        # `.item()` rather than `int()`: the same int in eager mode, and an unspecialized size when exported.
        return self.synonym_to_class.max().item() + 1

    def save(self, path: str) -> None:
        """Writes the text classifier to a safetensors file, e.g. beside a checkpoint, to skip the text tower later."""
        from safetensors.torch import save_file

        save_file(
            {"synonym_embeddings": self.synonym_embeddings.detach().cpu().contiguous(),
             "synonym_to_class": self.synonym_to_class.cpu().contiguous()},
            path,
        )

    @classmethod
    def load(cls, path: str) -> "PosSamTextEmbeddings":
        """Reads a file written by `save`; pass its fields to `PosSamModel.forward`."""
        from safetensors.torch import load_file

        tensors = load_file(path)
        missing = {"synonym_embeddings", "synonym_to_class"} - set(tensors)
        if missing:
            raise ValueError(f"{path} is not a PosSAM text classifier file: it lacks {sorted(missing)}.")
        return cls(synonym_embeddings=tensors["synonym_embeddings"], synonym_to_class=tensors["synonym_to_class"])


@dataclass
class PosSamDecoderOutput(ModelOutput):
    """Per-prediction outputs of the masked-attention decoder (the initial prediction, then one per layer).

    Args:
        mask_features (`torch.FloatTensor` of shape `(batch_size, mask_feature_size, height / 4, width / 4)`):
            The pixel decoder's per-pixel embeddings that masks are dot products with.
        query_states (`tuple[torch.FloatTensor]`, each `(batch_size, num_queries, hidden_dim)`):
            Layer-normalized query states, one per prediction.
        mask_embeddings (`tuple[torch.FloatTensor]`, each `(batch_size, num_queries, mask_feature_size)`):
            The mask head's query embeddings per prediction; a prediction's masks are their dot products with
            `mask_features` (at any resolution the features are resized to).
        masks_queries_logits (`tuple[torch.FloatTensor | None]`, each `(batch_size, num_queries, height / 4, width / 4)`):
            Mask logits at stride 4 per prediction; `None` for the intermediate predictions that inference computed
            only at the resolution the next layer's masked attention needs.
    """

    mask_features: torch.FloatTensor | None = None
    query_states: tuple[torch.FloatTensor, ...] | None = None
    mask_embeddings: tuple[torch.FloatTensor, ...] | None = None
    masks_queries_logits: tuple[torch.FloatTensor | None, ...] | None = None


@dataclass
class PosSamOutput(ModelOutput):
    """Output of [`PosSamModel`]. C is the number of classes of the vocabulary of this call, K the number of queries.

    The fields are the same in train and eval mode. The class ensemble (MASE) that turns `class_queries_logits`,
    `clip_logits` and `iou_scores` into class probabilities is post-processing (`ensemble_mode` of
    `post_process_*_segmentation`), so one forward pass serves every ensemble mode.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Weighted sum of all losses (all decoder predictions when deep supervision is on), when labels are given.
        loss_dict (`dict[str, torch.FloatTensor]`, *optional*):
            Unweighted components: `loss_cross_entropy`, `loss_mask`, `loss_dice`, `loss_iou` for the last prediction
            and the same keys suffixed `_0`, `_1`, ... for the auxiliary ones.
        class_queries_logits (`torch.FloatTensor` of shape `(batch_size, K, C + 1)`):
            In-vocabulary (LDP) class logits; the last column is void (no object).
        masks_queries_logits (`torch.FloatTensor` of shape `(batch_size, K, height / 4, width / 4)`):
            Mask logits of the last prediction at stride 4 of the padded input.
        iou_scores (`torch.FloatTensor` of shape `(batch_size, K)`):
            Predicted IoU of each mask with its object, in [0, 1].
        clip_logits (`torch.FloatTensor` of shape `(batch_size, K, C)`):
            Out-of-vocabulary logits: the frozen CLIP's mask-pooled region embedding against the class texts.
        vocabulary_is_thing (`torch.BoolTensor` of shape `(batch_size, C)`, *optional*):
            Thing flags of the classes when the model's default vocabulary was used (post-processing then knows which
            classes to merge as stuff); `None` for a vocabulary given by the caller.
        auxiliary_predictions (`tuple[dict[str, torch.FloatTensor]]`, *optional*):
            For each intermediate prediction (deep supervision): `class_queries_logits`, `masks_queries_logits`,
            `iou_scores`. Present when asked with `output_auxiliary_logits=True`.
        image_features ([`PosSamImageFeatures`], *optional*):
            The frozen towers' features, when asked with `output_image_features=True`, to reuse for another vocabulary.
        mask_features (`torch.FloatTensor` of shape `(batch_size, mask_feature_size, height / 4, width / 4)`, *optional*):
            The pixel decoder's per-pixel embeddings, when asked with `output_hidden_states=True`.
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict[str, torch.FloatTensor] | None = None
    class_queries_logits: torch.FloatTensor | None = None
    masks_queries_logits: torch.FloatTensor | None = None
    iou_scores: torch.FloatTensor | None = None
    clip_logits: torch.FloatTensor | None = None
    vocabulary_is_thing: torch.BoolTensor | None = None
    auxiliary_predictions: tuple[dict[str, torch.FloatTensor], ...] | None = None
    image_features: PosSamImageFeatures | None = None
    mask_features: torch.FloatTensor | None = None


@dataclass
class PosSamPromptOutput(ModelOutput):
    """Output of [`PosSamModel.segment_prompts`]: SAM's masks for point / box prompts, named by PosSAM.

    P is the number of prompts per image, M the masks per prompt (3 with `multimask_output=True`, else 1), C the
    classes of the vocabulary of this call.

    Args:
        pred_masks (`torch.FloatTensor` of shape `(batch_size, P, M, height / 4, width / 4)`):
            SAM's mask logits at stride 4 of the padded model input (post-processing maps them to the image).
        iou_scores (`torch.FloatTensor` of shape `(batch_size, P, M)`):
            SAM's predicted IoU of each mask.
        class_queries_logits (`torch.FloatTensor` of shape `(batch_size, P, M, C + 1)`):
            In-vocabulary (LDP) logits of each mask, void last.
        clip_logits (`torch.FloatTensor` of shape `(batch_size, P, M, C)`):
            Out-of-vocabulary logits: CLIP's mask-pooled region embedding against the class texts. Post-processing
            (`post_process_prompt_segmentation`) ensembles the two as for panoptic outputs, SAM's IoU in place of
            PosSAM's.
        image_features ([`PosSamImageFeatures`]):
            The image's features with its decoder queries filled in: pass them to the next `segment_prompts` call.
    """

    pred_masks: torch.FloatTensor | None = None
    iou_scores: torch.FloatTensor | None = None
    class_queries_logits: torch.FloatTensor | None = None
    clip_logits: torch.FloatTensor | None = None
    image_features: PosSamImageFeatures | None = None
