"""PosSAM pre- and post-processing: image processor, CLIP tokenizer, processor, panoptic/instance/semantic outputs."""

from .clip_tokenizer import load_clip_tokenizer
from .image_processing_possam import PosSamImageProcessor
from .postprocessing import (
    post_process_instance_segmentation,
    post_process_panoptic_segmentation,
    post_process_semantic_segmentation,
)
from .processing_possam import PosSamProcessor, embed_default_vocabulary, resolve_vocabulary


def register_processing_auto_classes() -> None:
    """Registers [`PosSamImageProcessor`] (PIL backend) and [`PosSamProcessor`] for `PosSamConfig` with
    `AutoImageProcessor` and `AutoProcessor`. Idempotent; the package root calls it on `import possam`."""
    from transformers import AutoImageProcessor, AutoProcessor

    from ..configuration import PosSamConfig

    AutoImageProcessor.register(PosSamConfig, image_processor_classes={"pil": PosSamImageProcessor}, exist_ok=True)
    AutoProcessor.register(PosSamConfig, PosSamProcessor, exist_ok=True)


__all__ = [
    "PosSamImageProcessor",
    "PosSamProcessor",
    "embed_default_vocabulary",
    "load_clip_tokenizer",
    "post_process_instance_segmentation",
    "post_process_panoptic_segmentation",
    "post_process_semantic_segmentation",
    "register_processing_auto_classes",
    "resolve_vocabulary",
]
