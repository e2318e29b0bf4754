"""PosSAM configuration, presets and vocabularies."""

from .configuration_possam import DEFAULT_PROMPT_TEMPLATES, PosSamClipConfig, PosSamConfig
from .presets import PRESETS, possam_preset
from .vocabulary import SHIPPED_VOCABULARIES, Vocabulary, VocabularyError, load_vocabulary


__all__ = [
    "DEFAULT_PROMPT_TEMPLATES",
    "PRESETS",
    "SHIPPED_VOCABULARIES",
    "PosSamClipConfig",
    "PosSamConfig",
    "Vocabulary",
    "VocabularyError",
    "load_vocabulary",
    "possam_preset",
]
