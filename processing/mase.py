"""Mask-Aware Selective Ensemble (MASE): combining in-vocabulary (LDP) and out-of-vocabulary (CLIP) predictions.

PosSAM has two classifiers for each mask: LDP's, trained on the training classes, sharp on them but biased against
classes it never saw; and frozen CLIP's, unbiased but coarse. Like FC-CLIP, the final class probability is a
per-class geometric mean, `p ~ p_ldp^(1-w) * p_clip^w`, with a small CLIP weight `alpha` for classes LDP knows ("seen")
and a large one `beta` for the others. FC-CLIP decides "seen" once per dataset by comparing class names with the
training vocabulary. MASE decides it per image, from the masks themselves: a class counts as seen in this image when a
*reliable* query (high predicted IoU, not void) predicts it confidently with LDP. The predicted IoU then also weighs
each mask's score, so well-formed masks win the pixel assignment and the ranking.

The ensemble is post-processing: the model returns both classifiers' logits and the predicted IoU whatever its mode,
and `post_process_*_segmentation(outputs, ensemble_mode=...)` combines them, so one forward pass serves every mode.
`config.ensemble_mode` (default) selects `"mase"`, `"geometric"` (FC-CLIP), `"ldp_only"` or `"clip_only"`; the
constants (alpha, beta, the MASE thresholds, the IoU exponent) are `PosSamConfig` fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from ..configuration import PosSamConfig


ENSEMBLE_MODES = ("mase", "geometric", "ldp_only", "clip_only")


def seen_class_mask(class_labels: list[str], training_vocabulary: list[str]) -> torch.BoolTensor:
    """FC-CLIP's notion of "seen": a class whose label, or any of its names, is a name of a training class."""
    training_names = {name.strip().lower() for entry in training_vocabulary for name in entry.split(",")}
    return torch.tensor(
        [any(name.strip().lower() in training_names for name in label.split(",")) for label in class_labels]
    )


def mase_seen_classes(
    ldp_probabilities: torch.Tensor,
    void_probabilities: torch.Tensor,
    iou_scores: torch.Tensor,
    iou_threshold: float,
    confidence_threshold: float,
    void_threshold: float,
) -> torch.BoolTensor:
    """Per image, the classes voted "seen" by reliable, confident queries -> `(batch, C)`.

    Args:
        ldp_probabilities: `(batch, K, C)` LDP softmax over the classes (void excluded).
        void_probabilities: `(batch, K)` LDP void probability (softmax over C + 1).
        iou_scores: `(batch, K)` predicted mask IoU.
    """
    confidence, label = ldp_probabilities.max(dim=-1)
    votes = (iou_scores >= iou_threshold) & (void_probabilities < void_threshold) & (confidence >= confidence_threshold)
    seen = torch.zeros_like(ldp_probabilities, dtype=torch.bool)
    seen.scatter_(-1, label.unsqueeze(-1), votes.unsqueeze(-1))
    return seen.any(dim=1)


def ensemble_class_probabilities(
    class_queries_logits: torch.Tensor,
    clip_logits: torch.Tensor,
    iou_scores: torch.Tensor,
    config: PosSamConfig,
    ensemble_mode: str | None = None,
    seen_classes: torch.BoolTensor | None = None,
) -> torch.Tensor:
    """Final class probabilities `(batch, K, C + 1)`: ensembled classes scaled by (1 - void), then void.

    Args:
        class_queries_logits: `(batch, K, C + 1)` LDP logits, void last.
        clip_logits: `(batch, K, C)` CLIP logits.
        iou_scores: `(batch, K)` predicted mask IoU.
        config: supplies alpha, beta and the MASE thresholds.
        ensemble_mode: overrides `config.ensemble_mode`.
        seen_classes: `(C,)` or `(batch, C)` seen flags, required by `"geometric"` (see `seen_class_mask`).
    """
    mode = check_ensemble_mode(ensemble_mode or config.ensemble_mode)
    logits = class_queries_logits.float()
    void = logits.softmax(dim=-1)[..., -1]
    ldp_log_probabilities = logits[..., :-1].log_softmax(dim=-1)
    clip_log_probabilities = clip_logits.float().log_softmax(dim=-1)
    batch_size, _, num_classes = clip_log_probabilities.shape

    if mode == "ldp_only":
        clip_weight = torch.zeros(1, 1, 1, device=logits.device)
    elif mode == "clip_only":
        clip_weight = torch.ones(1, 1, 1, device=logits.device)
    else:
        if mode == "mase":
            seen = mase_seen_classes(
                ldp_log_probabilities.exp(),
                void,
                iou_scores.float(),
                config.mase_iou_threshold,
                config.mase_confidence_threshold,
                config.mase_void_threshold,
            )
        else:
            if seen_classes is None:
                raise ValueError(
                    "ensemble_mode='geometric' needs `seen_classes`, the (C,) flags of classes seen in training; "
                    "build them with possam.processing.mase.seen_class_mask(labels, config.training_vocabulary)."
                )
            seen = seen_classes.to(device=logits.device, dtype=torch.bool).expand(batch_size, num_classes)
        alpha = torch.tensor(config.ensemble_alpha, device=logits.device)
        beta = torch.tensor(config.ensemble_beta, device=logits.device)
        clip_weight = torch.where(seen, alpha, beta).unsqueeze(1)

    ensembled = (1 - clip_weight) * ldp_log_probabilities + clip_weight * clip_log_probabilities
    class_probabilities = ensembled.softmax(dim=-1) * (1 - void).unsqueeze(-1)
    return torch.cat([class_probabilities, void.unsqueeze(-1)], dim=-1)


@lru_cache(maxsize=1)
def default_ensemble_config() -> PosSamConfig:
    """`PosSamConfig`'s defaults (MASE, alpha 0.4, beta 0.8, ...), used when post-processing is given no config."""
    return PosSamConfig()


def check_ensemble_mode(ensemble_mode: str) -> str:
    if ensemble_mode not in ENSEMBLE_MODES:
        raise ValueError(f"ensemble_mode must be one of {ENSEMBLE_MODES}, got {ensemble_mode!r}.")
    return ensemble_mode


def geometric_seen_classes(class_labels: Sequence[str], training_vocabulary: Sequence[str] | None) -> torch.BoolTensor:
    """`seen_class_mask` for `ensemble_mode="geometric"`, with a clear error when the training classes are unknown."""
    if not training_vocabulary:
        raise ValueError(
            "ensemble_mode='geometric' decides which classes were seen in training by name, but no training "
            "vocabulary is known (config.training_vocabulary is empty). Use ensemble_mode='mase' (per-image, needs no "
            "names) or give the class names the model was trained on (config.training_vocabulary / "
            "training_vocabulary=...)."
        )
    return seen_class_mask(list(class_labels), list(training_vocabulary))


def ensemble_scores(
    class_queries_logits: torch.Tensor,
    clip_logits: torch.Tensor,
    iou_scores: torch.Tensor,
    config: PosSamConfig | None = None,
    ensemble_mode: str | None = None,
    seen_classes: torch.BoolTensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(class_probabilities (B, K, C + 1), mask_scores (B, K))`: the per-query scores post-processing ranks.

    Args:
        class_queries_logits, clip_logits, iou_scores: the model output's fields (see `ensemble_class_probabilities`).
        config: supplies the default `ensemble_mode`, alpha, beta, the MASE thresholds and `iou_score_exponent`;
            `None` takes `PosSamConfig`'s defaults.
        ensemble_mode: overrides `config.ensemble_mode`.
        seen_classes: `(C,)` or `(B, C)` seen flags for `"geometric"` (see `geometric_seen_classes`).
    """
    config = config if config is not None else default_ensemble_config()
    class_probabilities = ensemble_class_probabilities(
        class_queries_logits, clip_logits, iou_scores, config, ensemble_mode, seen_classes
    )
    return class_probabilities, iou_scores.float() ** config.iou_score_exponent
