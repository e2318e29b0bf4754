"""PosSAM training: datasets (COCO panoptic format, ADE20K conversion, synthetic), augmentation, metrics, trainer.

Data and metrics (one concept per module):
    coco_panoptic      lazy COCO panoptic `datasets.Dataset` + per-example decoding and checks
    hub_panoptic       Hub-style panoptic datasets (image, annotation, segments_info) through a `datasets` transform
    validation         whole-dataset validation before training (parallel, cached), --skip_invalid
    ade20k             ADEChallengeData2016 (+ instance annotations) -> COCO panoptic format
    synthetic          a small learnable synthetic dataset written in COCO panoptic format
    augmentation       large-scale jitter (train) and longest-side resize (eval)
    panoptic_targets   per-segment mask / class targets from a segment-id map
    metric_panoptic_quality, metric_mask_ap, metric_semantic_iou, panoptic_evaluator
    panoptic_metrics   model outputs -> post-processing (each ensemble mode) -> metrics; the Trainer's compute_metrics

Training (one concept per module):
    dataset            decoded, augmented, tensorized training / evaluation examples
    collator           batches, with the run's tokenized vocabulary attached
    feature_cache      cached frozen-tower features for fast fine-tuning
    trainer            PosSamTrainer and PosSamTrainingArguments
    checkpoint_checks  a checkpoint's files checked before resuming; the newest complete one (`--resume_from_checkpoint last`)
    evaluation         the evaluation loop outside the Trainer (inference, post-processing, metrics)
    arguments, run, train_cli, evaluate_cli   the `possam train` / `possam evaluate` commands
"""

from .ade20k import ADE20KConversionError, ConvertedPanopticSplit, convert_ade20k_to_coco_panoptic
from .augmentation import AugmentedExample, LargeScaleJitter, resize_longest_side
from .collator import PosSamDataCollator
from .dataset import PanopticEvaluationDataset, PanopticTrainingDataset
from .evaluation import evaluate_panoptic
from .feature_cache import CachedFeaturesDataset, build_feature_cache
from .coco_panoptic import (
    PanopticDataError,
    PanopticExample,
    decode_panoptic_example,
    load_coco_panoptic,
    vocabulary_from_categories,
)
from .hub_panoptic import load_hub_panoptic
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
from .panoptic_metrics import PanopticMetrics
from .panoptic_targets import panoptic_targets
from .synthetic import SyntheticPanopticDataset, generate_synthetic_coco_panoptic, synthetic_vocabulary
from .trainer import PosSamTrainer, PosSamTrainingArguments


__all__ = [
    "ADE20KConversionError",
    "AugmentedExample",
    "CachedFeaturesDataset",
    "ConvertedPanopticSplit",
    "EVALUATE_METRIC_DIR",
    "LargeScaleJitter",
    "MaskAPAccumulator",
    "MaskAPResult",
    "PanopticDataError",
    "PanopticEvaluationDataset",
    "PanopticEvaluator",
    "PanopticExample",
    "PanopticMetrics",
    "PanopticQualityAccumulator",
    "PanopticQualityResult",
    "PanopticQualityScores",
    "PanopticTrainingDataset",
    "PosSamDataCollator",
    "PosSamTrainer",
    "PosSamTrainingArguments",
    "SemanticIoUAccumulator",
    "SemanticIoUResult",
    "SyntheticPanopticDataset",
    "build_feature_cache",
    "convert_ade20k_to_coco_panoptic",
    "decode_panoptic_example",
    "evaluate_panoptic",
    "generate_synthetic_coco_panoptic",
    "load_coco_panoptic",
    "load_hub_panoptic",
    "panoptic_quality",
    "panoptic_targets",
    "resize_longest_side",
    "semantic_map_from_panoptic",
    "synthetic_vocabulary",
    "vocabulary_from_categories",
]
