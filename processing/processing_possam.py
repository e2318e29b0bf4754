"""PosSAM processor: images through [`PosSamImageProcessor`], an open vocabulary through prompt templates and the CLIP
tokenizer, and post-processing that names segments with the vocabulary's labels."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from ..configuration.configuration_possam import DEFAULT_PROMPT_TEMPLATES
from ..configuration.remote_code import (
    IMAGE_PROCESSOR_AUTO_MAP,
    PROCESSOR_AUTO_MAP,
    SavesRemoteCode,
    write_remote_code,
)
from ..configuration.vocabulary import SHIPPED_VOCABULARIES, Vocabulary, VocabularyError, load_vocabulary
from .clip_tokenizer import CLIP_CONTEXT_LENGTH, clean_prompt, load_clip_tokenizer
from .image_processing_possam import PosSamImageProcessor
from .mase import geometric_seen_classes
from .postprocessing import num_classes_of
from .prompt_inputs import prepare_prompts


# Tokenized vocabularies kept per processor; a vocabulary is usually reused for many images.
VOCABULARY_CACHE_SIZE = 8


def resolve_vocabulary(text, stuff_labels: str | Sequence[str] | None = None) -> Vocabulary:
    """Turns the accepted vocabulary forms into a [`Vocabulary`].

    Args:
        text: a [`Vocabulary`] (e.g. `possam.load_vocabulary("ade20k_150")` for a shipped one or a vocabulary file);
            a list with one entry per class (`["person|child|girl", "cat", "grass"]`: `|` separates synonyms of one
            class, the first name is the label; the older `"person,child,girl"` entry form still means one class);
            a string of comma-separated classes (`"person|child|girl,cat,grass"`, as transformers' zero-shot
            pipelines and `possam predict --labels` take it); or a vocabulary file as a `pathlib.Path`.
        stuff_labels: with class names, the labels to treat as stuff (merged per class by panoptic post-processing),
            as a list or a comma-separated string; each must be one of the classes. Vocabularies and files carry
            their own flags.
    """
    if isinstance(text, (Vocabulary, os.PathLike)):
        if stuff_labels is not None:
            raise ValueError(
                "stuff_labels can only be given with class names; a Vocabulary or a vocabulary file has its own flags."
            )
        return text if isinstance(text, Vocabulary) else load_vocabulary(text)
    if isinstance(text, str) and (text.strip() in SHIPPED_VOCABULARIES or ("," not in text and os.path.isfile(text))):
        raise VocabularyError(
            f"{text!r} names a {'shipped vocabulary' if text.strip() in SHIPPED_VOCABULARIES else 'vocabulary file'}, "
            "but a string of labels is a comma-separated list of class names. Load it with "
            f"possam.load_vocabulary({text.strip()!r}), or pass vocabulary={text.strip()!r} to the pipeline."
        )
    if isinstance(text, (str, Sequence)):
        return Vocabulary.from_labels(text, stuff_labels=stuff_labels)
    raise TypeError(
        "text must be a list of class names, a comma-separated string of them, a Vocabulary or a vocabulary file "
        f"path (pathlib.Path), got {type(text).__name__}."
    )


class PosSamProcessor(SavesRemoteCode, ProcessorMixin):
    r"""
    Constructs a PosSAM processor: a [`PosSamImageProcessor`] for images and a CLIP tokenizer for the open vocabulary.

    The vocabulary becomes prompts: for each class, for each of its synonyms, for each template (template order within
    a synonym), the template with `{}` replaced by the synonym. The text classifier averages a synonym's prompt
    embeddings and takes a class's maximum over its synonyms, using `prompt_to_synonym` and `synonym_to_class`.

    Args:
        image_processor ([`PosSamImageProcessor`], *optional*): defaults to `PosSamImageProcessor()` (1024 input).
        tokenizer ([`CLIPTokenizer`], *optional*): defaults to the CLIP tokenizer shipped with PosSAM.
        prompt_templates (`list[str]`, *optional*): templates with one `{}`; FC-CLIP's 14 by default.
    """

    def __init__(self, image_processor=None, tokenizer=None, prompt_templates: Sequence[str] | None = None):
        templates = list(DEFAULT_PROMPT_TEMPLATES if prompt_templates is None else prompt_templates)
        bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
        if not templates or bad:
            raise ValueError(f"prompt_templates must be non-empty strings with exactly one '{{}}'; offending: {bad}.")
        self.prompt_templates = templates
        self._vocabulary_cache: OrderedDict = OrderedDict()
        super().__init__(
            image_processor if image_processor is not None else PosSamImageProcessor(),
            tokenizer if tokenizer is not None else load_clip_tokenizer(),
        )

    @classmethod
    def for_model_config(cls, config) -> "PosSamProcessor":
        """A processor that fits a `PosSamConfig`: its input size, its prompt templates, the shipped CLIP tokenizer."""
        return cls(PosSamImageProcessor(size={"longest_edge": config.image_size}), load_clip_tokenizer(), config.prompt_templates)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # The image processor is resolved through AutoImageProcessor, which only knows registered classes.
        from . import register_processing_auto_classes

        register_processing_auto_classes()
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def to_dict(self) -> dict:
        """`processor_config.json`, with the `auto_map` that lets `AutoProcessor` load PosSAM's processor without
        `import possam` (otherwise it would fall back to a bare `CLIPTokenizer`)."""
        return {**super().to_dict(), "auto_map": dict(PROCESSOR_AUTO_MAP)}

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Writes the processor and the remote-code modules its `auto_map` entries name."""
        write_remote_code(save_directory, {**PROCESSOR_AUTO_MAP, **IMAGE_PROCESSOR_AUTO_MAP})
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def __call__(
        self,
        images=None,
        text=None,
        stuff_labels: Sequence[str] | None = None,
        annotations=None,
        return_tensors: str | None = "pt",
        input_points=None,
        input_labels=None,
        input_boxes=None,
        **images_kwargs,
    ) -> BatchFeature:
        """Prepares images (and training annotations) and/or a vocabulary for [`PosSamModel`].

        Args:
            images: images for [`PosSamImageProcessor`].
            text: the vocabulary, any form [`resolve_vocabulary`] accepts.
            stuff_labels: stuff classes when `text` is a list of entries.
            annotations: training annotations, one per image (see [`PosSamImageProcessor.preprocess`]).
            input_points, input_labels, input_boxes: prompts for [`PosSamModel.segment_prompts`] in pixels of the
                original images, mapped to the model input (layouts in `possam.processing.prompt_inputs`).
            images_kwargs: further options of [`PosSamImageProcessor.preprocess`] (`category_to_label`, `size`, ...).

        Returns:
            [`BatchFeature`] with the image processor's outputs (`pixel_values`, `pixel_mask`, `original_sizes`,
            `reshaped_input_sizes`, and the targets) and the vocabulary's `input_ids` (P, L), `attention_mask` (P, L),
            `prompt_to_synonym` (P,) and `synonym_to_class` (S,), L being the longest prompt (at most 77 tokens).
        """
        if images is None and text is None:
            raise ValueError("Give images, text (the vocabulary), or both.")
        data = {}
        if images is not None:
            data.update(self.image_processor(images, annotations, return_tensors=return_tensors, **images_kwargs))
        elif annotations is not None:
            raise ValueError("annotations were given without their images.")
        if input_points is not None or input_labels is not None or input_boxes is not None:
            if images is None:
                raise ValueError("Prompts (input_points / input_boxes) are in image pixels: give their images too.")
            prompts = prepare_prompts(
                data["original_sizes"], data["reshaped_input_sizes"], input_points, input_labels, input_boxes
            )
            data.update({k: v.numpy() for k, v in prompts.items()} if return_tensors == "np" else prompts)
        if text is not None:
            encoded = self.encode_vocabulary(resolve_vocabulary(text, stuff_labels))
            data.update({k: v.numpy() for k, v in encoded.items()} if return_tensors == "np" else encoded)
        elif stuff_labels is not None:
            raise ValueError("stuff_labels were given without the vocabulary (text).")
        return BatchFeature(data=data)

    def build_prompts(self, vocabulary: Vocabulary) -> tuple[list[str], list[int], list[int]]:
        """The prompts of a vocabulary, the synonym of each prompt and the class of each synonym."""
        prompts, prompt_to_synonym, synonym_to_class = [], [], []
        for class_index, names in enumerate(vocabulary.class_names):
            for name in names:
                synonym = len(synonym_to_class)
                synonym_to_class.append(class_index)
                for template in self.prompt_templates:
                    prompts.append(template.replace("{}", name))
                    prompt_to_synonym.append(synonym)
        return prompts, prompt_to_synonym, synonym_to_class

    def encode_vocabulary(self, vocabulary: Vocabulary) -> dict[str, torch.Tensor]:
        """Tokenizes a vocabulary's prompts (cached: the same vocabulary and templates are tokenized once).

        Returns `input_ids` and `attention_mask` (P, L) padded to the longest prompt, `prompt_to_synonym` (P,) and
        `synonym_to_class` (S,), all int64.
        """
        key = (tuple(tuple(names) for names in vocabulary.class_names), tuple(self.prompt_templates))
        if key in self._vocabulary_cache:
            self._vocabulary_cache.move_to_end(key)
        else:
            self._vocabulary_cache[key] = self._tokenize(vocabulary)
            if len(self._vocabulary_cache) > VOCABULARY_CACHE_SIZE:
                self._vocabulary_cache.popitem(last=False)
        # Copies, so that a caller writing into the tensors cannot corrupt the cache.
        return {name: tensor.clone() for name, tensor in self._vocabulary_cache[key].items()}

    def _tokenize(self, vocabulary: Vocabulary) -> dict[str, torch.Tensor]:
        prompts, prompt_to_synonym, synonym_to_class = self.build_prompts(vocabulary)
        tokens = self.tokenizer(
            [clean_prompt(prompt) for prompt in prompts], padding="longest", truncation=False, return_tensors="pt"
        )
        lengths = tokens["attention_mask"].sum(1)
        too_long = torch.nonzero(lengths > CLIP_CONTEXT_LENGTH).flatten().tolist()
        if too_long:
            first = too_long[0]
            label = vocabulary.labels[synonym_to_class[prompt_to_synonym[first]]]
            raise ValueError(
                f"{len(too_long)} prompt(s) exceed CLIP's {CLIP_CONTEXT_LENGTH} tokens, e.g. {prompts[first]!r} "
                f"of class {label!r} ({int(lengths[first])} tokens); shorten the class name or the prompt templates."
            )
        return {
            "input_ids": tokens["input_ids"].long(),
            "attention_mask": tokens["attention_mask"].long(),
            "prompt_to_synonym": torch.tensor(prompt_to_synonym, dtype=torch.int64),
            "synonym_to_class": torch.tensor(synonym_to_class, dtype=torch.int64),
        }

    @staticmethod
    def _check_classes(outputs, vocabulary: Vocabulary):
        num_classes = num_classes_of(outputs)
        if num_classes != len(vocabulary):
            raise ValueError(
                f"The model output has {num_classes} classes but the vocabulary has {len(vocabulary)}; post-process "
                "with the vocabulary the model was run with."
            )

    @staticmethod
    def _ensemble_options(vocabulary: Vocabulary, ensemble_mode, config, training_vocabulary) -> dict:
        """The image processor's ensemble arguments; `"geometric"` marks as seen the vocabulary's classes named in
        `training_vocabulary` (default `config.training_vocabulary`)."""
        options = {"ensemble_mode": ensemble_mode, "config": config}
        if (ensemble_mode or getattr(config, "ensemble_mode", None)) == "geometric":
            if training_vocabulary is None and config is not None:
                training_vocabulary = config.training_vocabulary
            options["seen_classes"] = geometric_seen_classes(vocabulary.entries, training_vocabulary)
        return options

    @staticmethod
    def _name_segments(results: list[dict], vocabulary: Vocabulary) -> list[dict]:
        labels = vocabulary.labels
        for result in results:
            for segment in result["segments_info"]:
                segment["label"] = labels[segment["label_id"]]
        return results

    def post_process_panoptic_segmentation(
        self,
        outputs,
        vocabulary,
        stuff_labels=None,
        label_ids_to_fuse=None,
        ensemble_mode=None,
        config=None,
        training_vocabulary=None,
        **kwargs,
    ):
        """Panoptic post-processing (see [`PosSamImageProcessor.post_process_panoptic_segmentation`]) whose stuff
        classes come from the vocabulary and whose segments carry their `"label"` text.

        Args:
            vocabulary: the vocabulary the model was run with, any form [`resolve_vocabulary`] accepts.
            stuff_labels: stuff classes when `vocabulary` is a list of entries.
            label_ids_to_fuse: overrides the vocabulary's stuff classes.
            ensemble_mode: the class ensemble (`"mase"`, `"geometric"`, `"ldp_only"`, `"clip_only"`); default
                `config.ensemble_mode`. The same outputs can be post-processed in every mode.
            config: the model's config (ensemble constants, default mode, training vocabulary); `None` takes
                `PosSamConfig`'s defaults. Pass `model.config`.
            training_vocabulary: for `"geometric"`, the training classes (default `config.training_vocabulary`); the
                vocabulary's classes named there count as seen.
            kwargs: `threshold`, `mask_threshold`, `overlap_mask_area_threshold`, `target_sizes`,
                `reshaped_input_sizes`.
        """
        vocabulary = resolve_vocabulary(vocabulary, stuff_labels)
        self._check_classes(outputs, vocabulary)
        if label_ids_to_fuse is None:
            label_ids_to_fuse = vocabulary.stuff_label_ids
        results = self.image_processor.post_process_panoptic_segmentation(
            outputs,
            label_ids_to_fuse=label_ids_to_fuse,
            **self._ensemble_options(vocabulary, ensemble_mode, config, training_vocabulary),
            **kwargs,
        )
        return self._name_segments(results, vocabulary)

    def post_process_instance_segmentation(
        self,
        outputs,
        vocabulary,
        stuff_labels=None,
        stuff_label_ids=None,
        ensemble_mode=None,
        config=None,
        training_vocabulary=None,
        **kwargs,
    ):
        """Instance post-processing (see [`PosSamImageProcessor.post_process_instance_segmentation`]) that drops the
        vocabulary's stuff classes and names each instance with its `"label"`; the ensemble arguments are those of
        `post_process_panoptic_segmentation`."""
        vocabulary = resolve_vocabulary(vocabulary, stuff_labels)
        self._check_classes(outputs, vocabulary)
        if stuff_label_ids is None:
            stuff_label_ids = vocabulary.stuff_label_ids
        results = self.image_processor.post_process_instance_segmentation(
            outputs,
            stuff_label_ids=stuff_label_ids,
            **self._ensemble_options(vocabulary, ensemble_mode, config, training_vocabulary),
            **kwargs,
        )
        return self._name_segments(results, vocabulary)

    def post_process_prompt_segmentation(
        self, outputs, vocabulary, stuff_labels=None, ensemble_mode=None, config=None, training_vocabulary=None, **kwargs
    ):
        """One named mask per prompt of [`PosSamModel.segment_prompts`] (see
        [`PosSamImageProcessor.post_process_prompt_segmentation`]), labelled from `vocabulary`. The ensemble arguments
        are those of `post_process_panoptic_segmentation`.

        Args:
            vocabulary: the vocabulary the prompts were classified with, any form [`resolve_vocabulary`] accepts.
            kwargs: `mask_threshold`, `target_sizes` (the original sizes), `reshaped_input_sizes`.
        """
        vocabulary = resolve_vocabulary(vocabulary, stuff_labels)
        return self.image_processor.post_process_prompt_segmentation(
            outputs,
            vocabulary.labels,
            **self._ensemble_options(vocabulary, ensemble_mode, config, training_vocabulary),
            **kwargs,
        )

    def post_process_semantic_segmentation(
        self, outputs, vocabulary, stuff_labels=None, ensemble_mode=None, config=None, training_vocabulary=None, **kwargs
    ):
        """Semantic post-processing (see [`PosSamImageProcessor.post_process_semantic_segmentation`]): one (H, W)
        map of label ids per image; `vocabulary.labels[i]` names label id i. The ensemble arguments are those of
        `post_process_panoptic_segmentation`."""
        vocabulary = resolve_vocabulary(vocabulary, stuff_labels)
        self._check_classes(outputs, vocabulary)
        return self.image_processor.post_process_semantic_segmentation(
            outputs, **self._ensemble_options(vocabulary, ensemble_mode, config, training_vocabulary), **kwargs
        )


__all__ = ["PosSamProcessor", "resolve_vocabulary"]


def embed_default_vocabulary(model, processor: PosSamProcessor, vocabulary=None) -> None:
    """Makes `vocabulary` (default: the model's `config.vocabulary`) the model's default one and stores its text
    embeddings in the model, so the model, once saved, segments without any text input (e.g. in transformers'
    `image-segmentation` pipeline).

    Args:
        vocabulary: any form [`resolve_vocabulary`] accepts.
    """
    if vocabulary is None:
        vocabulary = Vocabulary.from_entries(model.config.vocabulary, model.config.vocabulary_is_thing)
    vocabulary = resolve_vocabulary(vocabulary)
    model.set_default_vocabulary(vocabulary.entries, vocabulary.is_thing, **processor.encode_vocabulary(vocabulary))
