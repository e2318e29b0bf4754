"""PosSAM: Panoptic Open-vocabulary Segment Anything for Hugging Face Transformers.

`import possam` registers PosSAM with the transformers Auto classes (`AutoConfig`, `AutoModel`).
"""

from transformers import AutoConfig, AutoModel

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


AutoConfig.register(PosSamConfig.model_type, PosSamConfig, exist_ok=True)
AutoConfig.register(PosSamClipConfig.model_type, PosSamClipConfig, exist_ok=True)
AutoModel.register(PosSamConfig, PosSamModel, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PROMPT_TEMPLATES",
    "PosSamClipConfig",
    "PosSamConfig",
    "PosSamImageFeatures",
    "PosSamModel",
    "PosSamOutput",
    "PosSamPreTrainedModel",
    "PosSamTextEmbeddings",
    "Vocabulary",
    "VocabularyError",
    "load_vocabulary",
    "possam_preset",
]
