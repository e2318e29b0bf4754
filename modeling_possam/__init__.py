"""PosSAM: Panoptic Open-vocabulary Segment Anything for Hugging Face Transformers.

`import possam` registers PosSAM with the transformers Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForImageSegmentation`, `AutoModelForUniversalSegmentation`, `AutoImageProcessor`, `AutoProcessor`) and the
`open-vocab-panoptic` task with `transformers.pipeline`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageSegmentation, AutoModelForUniversalSegmentation

from .configuration import (
    DEFAULT_PROMPT_TEMPLATES,
    PosSamClipConfig,
    PosSamConfig,
    Vocabulary,
    VocabularyError,
    load_vocabulary,
    possam_preset,
)
from .modeling_possam import PosSamModel, PosSamPreTrainedModel
from .outputs import PosSamImageFeatures, PosSamOutput, PosSamTextEmbeddings
from .processing import PosSamImageProcessor, PosSamProcessor, register_processing_auto_classes
from .processing.pipeline_possam import OpenVocabPanopticPipeline, register_pipeline

AutoConfig.register(PosSamConfig.model_type, PosSamConfig, exist_ok=True)
AutoConfig.register(PosSamClipConfig.model_type, PosSamClipConfig, exist_ok=True)
AutoModel.register(PosSamConfig, PosSamModel, exist_ok=True)
# transformers' `image-segmentation` pipeline loads its model through these (with the model's default vocabulary).
AutoModelForImageSegmentation.register(PosSamConfig, PosSamModel, exist_ok=True)
AutoModelForUniversalSegmentation.register(PosSamConfig, PosSamModel, exist_ok=True)
register_processing_auto_classes()
register_pipeline()

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PROMPT_TEMPLATES",
    "OpenVocabPanopticPipeline",
    "PosSamClipConfig",
    "PosSamConfig",
    "PosSamImageFeatures",
    "PosSamImageProcessor",
    "PosSamModel",
    "PosSamOutput",
    "PosSamPreTrainedModel",
    "PosSamProcessor",
    "PosSamTextEmbeddings",
    "Vocabulary",
    "VocabularyError",
    "load_vocabulary",
    "possam_preset",
]
