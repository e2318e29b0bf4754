"""PosSAM training: datasets (COCO panoptic format, ADE20K conversion, synthetic), augmentation, metrics, trainer.

Data and metrics (one concept per module):
    coco_panoptic      lazy COCO panoptic `datasets.Dataset` + per-example decoding and checks
    ade20k             ADEChallengeData2016 (+ instance annotations) -> COCO panoptic format
    synthetic          a small learnable synthetic dataset written in COCO panoptic format
    augmentation       large-scale jitter (train) and longest-side resize (eval)
    panoptic_targets   per-segment mask / class targets from a segment-id map
    metric_panoptic_quality, metric_mask_ap, metric_semantic_iou, panoptic_evaluator
"""

from .ade20k import ADE20KConversionError, ConvertedPanopticSplit, convert_ade20k_to_coco_panoptic
from .augmentation import AugmentedExample, LargeScaleJitter, resize_longest_side
from .coco_panoptic import (
    PanopticDataError,
    PanopticExample,
    decode_panoptic_example,
    load_coco_panoptic,
    vocabulary_from_categories,
)
from .metric_mask_ap import MaskAPAccumulator, MaskAPResult
from .metric_panoptic_quality import (
    EVALUATE_METRIC_DIR,
    PanopticQualityAccumulator,
    PanopticQualityResult,
    PanopticQualityScores,
    panoptic_quality,
)
from .metric_semantic_iou import SemanticIoUAccumulator, SemanticIoUResult
from .panoptic_evaluator import PanopticEvaluator, semantic_map_from_panoptic
from .panoptic_targets import panoptic_targets
from .synthetic import SyntheticPanopticDataset, generate_synthetic_coco_panoptic, synthetic_vocabulary


__all__ = [
    "ADE20KConversionError",
    "AugmentedExample",
    "ConvertedPanopticSplit",
    "EVALUATE_METRIC_DIR",
    "LargeScaleJitter",
    "MaskAPAccumulator",
    "MaskAPResult",
    "PanopticDataError",
    "PanopticEvaluator",
    "PanopticExample",
    "PanopticQualityAccumulator",
    "PanopticQualityResult",
    "PanopticQualityScores",
    "SemanticIoUAccumulator",
    "SemanticIoUResult",
    "SyntheticPanopticDataset",
    "convert_ade20k_to_coco_panoptic",
    "decode_panoptic_example",
    "generate_synthetic_coco_panoptic",
    "load_coco_panoptic",
    "panoptic_quality",
    "panoptic_targets",
    "resize_longest_side",
    "semantic_map_from_panoptic",
    "synthetic_vocabulary",
    "vocabulary_from_categories",
]
