"""The `open-vocab-panoptic` pipeline: images + any class names -> named panoptic, instance or semantic segments.

    >>> import possam  # registers the task
    >>> from transformers import pipeline
    >>> segmenter = pipeline("open-vocab-panoptic", model="path/to/possam")
    >>> segments = segmenter("street.jpg", candidate_labels="car,person|pedestrian,road,sky", stuff_labels="road,sky")
    >>> segments[0]["label"], segments[0]["mask"].size   # PIL "L" mask at the image's size, 255 inside

The output follows transformers' `image-segmentation` pipeline (a list of `{"score", "label", "mask"}` per image);
the vocabulary is an input instead of `config.id2label`. A vocabulary is tokenized once by the processor and embedded
once by the model (both cache it), however many images or batches it is used for.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from transformers.pipelines import PIPELINE_REGISTRY, Pipeline

from ..configuration.remote_code import TASK
from ..configuration.vocabulary import Vocabulary, load_vocabulary
from .mase import check_ensemble_mode, geometric_seen_classes
from .processing_possam import PosSamProcessor, resolve_vocabulary
from .prompt_inputs import prepare_prompts

SUBTASKS = ("panoptic", "instance", "semantic")
# Keys of one input dict, as in transformers' zero-shot-object-detection pipeline: {"image": ..., "candidate_labels": ...}.
INPUT_KEYS = ("image", "candidate_labels", "stuff_labels")

NO_DEFAULT_MODEL = (
    f"The {TASK!r} pipeline has no default model: no public PosSAM weights exist. Pass a PosSAM checkpoint, e.g. "
    f"pipeline({TASK!r}, model='path/to/possam') — a folder written by model.save_pretrained and "
    "processor.save_pretrained, or a Hub id."
)


class _NoDefaultModel(Mapping):
    """The task's `default` entry: transformers reads `default["model"]` when `pipeline()` gets no model, and this
    answers with an explanation instead of a checkpoint name (without a `default`, the user would see `KeyError`)."""

    def __getitem__(self, key):
        raise ValueError(NO_DEFAULT_MODEL)

    def __contains__(self, key) -> bool:
        return key == "model"

    def __iter__(self) -> Iterator[str]:
        return iter(("model",))

    def __len__(self) -> int:
        return 1


@dataclass
class _PromptedImage:
    """One pipeline input with its click/box prompts, in the image's pixels."""

    image: object
    points: list | None
    boxes: list | None


def _prompts_per_image(name: str, prompts, images: list) -> list:
    """`points=` / `boxes=` for a list of images: one list of prompts (or None) per image."""
    if prompts is None:
        return [None] * len(images)
    if not isinstance(prompts, (list, tuple)) or len(prompts) != len(images) or not all(
        entry is None or isinstance(entry, (list, tuple)) for entry in prompts
    ):
        raise ValueError(
            f"{name}= with {len(images)} images must hold one list of prompts per image (or None), got {prompts!r}."
        )
    return list(prompts)


def _is_per_image(labels) -> bool:
    """Per-image label lists (`[["cat", "dog"], ["sky"]]`) rather than one vocabulary for every image."""
    return isinstance(labels, (list, tuple)) and bool(labels) and all(isinstance(item, (list, tuple)) for item in labels)


def _vocabulary_key(vocabulary: Vocabulary | None):
    """What the model's forward depends on: the class names (thing/stuff flags only matter to post-processing)."""
    return None if vocabulary is None else tuple(tuple(names) for names in vocabulary.class_names)


def _mask_image(mask: torch.Tensor | np.ndarray) -> PIL.Image.Image:
    """A boolean (H, W) mask -> PIL "L" image, 255 inside (transformers' image-segmentation format)."""
    mask = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return PIL.Image.fromarray(mask.astype(np.uint8) * 255)


class OpenVocabPanopticPipeline(Pipeline):
    """Open-vocabulary panoptic, instance and semantic segmentation with PosSAM.

    Call it with one image or a list of images (PIL images, file paths, http(s) URLs, numpy arrays or tensors) and a
    vocabulary. Each result is a list of `{"score", "label", "mask"}` dicts, one per segment, best first, where
    `mask` is a PIL "L" image of the original image size with 255 inside the segment. With
    `return_panoptic_map=True` each result is instead a dict `{"segments": <that list>, "segmentation": (H, W) int32
    array of segment ids (0 = no segment), "segments_info": [{"id", "label_id", "label", "score", "was_fused"}]}`.

    Built by `pipeline("open-vocab-panoptic", model=...)`, which loads the model and its [`PosSamProcessor`]; or
    directly as `OpenVocabPanopticPipeline(model=model, processor=processor)`.
    """

    _load_processor = True
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.processor, PosSamProcessor):
            raise TypeError(
                f"The {TASK!r} pipeline needs a PosSamProcessor (processor=...), got {type(self.processor).__name__}. "
                "Save one next to the model with processor.save_pretrained(model_dir)."
            )
        self.model.eval()

    def __call__(self, inputs=None, **kwargs):
        """Segments one image or a list of images with an open vocabulary.

        Args:
            inputs: an image (PIL image, file path, http(s) URL, numpy array or tensor) or a list of images; also
                accepted as `images=`. A list returns a list of results, one per image (an empty list returns `[]`).
                As in transformers' zero-shot-object-detection pipeline, an input can also be a dict
                `{"image": ..., "candidate_labels": ..., "stuff_labels": ...}` (labels optional) or a list of them.
            candidate_labels (`list[str]`, `str` or `list[list[str]]`, *optional*): the classes, as transformers'
                zero-shot pipelines take them: a list with one entry per class (`["car", "person|pedestrian"]`), or a
                string of comma-separated classes (`"car,person|pedestrian"`). `|` separates synonyms of one class (the
                first name is the label); inside a list entry the older `"person,pedestrian"` form also means one
                class. A list of such lists, one per image of a list input, gives each image its own classes.
                Default: the model's vocabulary (`config.vocabulary`).
            stuff_labels (`list[str]` or `str`, *optional*): labels of `candidate_labels` that are stuff (sky, grass),
                as a list or a comma-separated string: merged into one segment per class in panoptic results and left
                out of instance results. With per-image labels: one list per image, or one shared list (each stuff
                label then applies to the images whose labels contain it).
            vocabulary (`str`, `os.PathLike` or [`Vocabulary`], *optional*): instead of `candidate_labels`, a shipped
                vocabulary (`"coco_panoptic"`, `"ade20k_150"`, `"ade20k_847"`) or a vocabulary file
                (`id:name1,name2[:thing|:stuff]` lines). Vocabulary files carry their own thing/stuff flags.
            subtask (`str`, *optional*, defaults to `"panoptic"`): `"panoptic"`, `"instance"` (top-scoring, possibly
                overlapping instances of thing classes) or `"semantic"` (one segment per class present, score None).
            threshold (`float`, *optional*, defaults to 0.0): minimum segment score. Scores are class probability x
                predicted mask IoU, so they are small; 0.0 keeps every non-void segment, as FC-CLIP does.
            mask_threshold (`float`, *optional*, defaults to 0.5): mask probability above which a pixel is inside.
            overlap_mask_area_threshold (`float`, *optional*, defaults to 0.8): panoptic only; a segment is dropped
                when it keeps less than this fraction of its own mask after overlaps are resolved.
            ensemble_mode (`str`, *optional*): overrides `config.ensemble_mode` (`"mase"`, `"geometric"`,
                `"ldp_only"`, `"clip_only"`); `"geometric"` marks as seen the classes named in
                `config.training_vocabulary`. The ensemble is post-processing: the model's forward pass is the same
                in every mode.
            return_panoptic_map (`bool`, *optional*, defaults to `False`): return the segment id map and
                `segments_info` with the segments (see the class docstring). For `"instance"` the map holds the best
                instance at each pixel while `segments` keep each instance's full mask; for `"semantic"` segment k
                is the k-th class present, in label-id order.
            batch_size (`int`, *optional*): images per model call for list inputs.
            timeout (`float`, *optional*): seconds to wait when fetching an image URL.
            points (`list[tuple[float, float]]`, *optional*): promptable segmentation: clicks (x, y) in the image's
                pixels, one mask per click; for a list of images, one such list (or None) per image.
            boxes (`list[tuple[float, float, float, float]]`, *optional*): boxes (x0, y0, x1, y1), one mask each.
                With `points` and/or `boxes` the result is, per prompt (points first, then boxes), `{"mask", "label",
                "score", "iou_score"}`: SAM's mask for the prompt (the best of its three candidates by SAM's predicted
                IoU, `iou_score`), named over the vocabulary (`score`: the label's probability). The image's encoders
                run once for all its prompts.
        """
        if "images" in kwargs:
            if inputs is not None:
                raise ValueError("Pass the images either as the first argument or as images=..., not both.")
            inputs = kwargs.pop("images")
        if inputs is None:
            raise ValueError(f"The {TASK!r} pipeline needs images: pipe(image_or_list_of_images, ...).")
        if isinstance(inputs, (list, tuple)) and len(inputs) == 0:
            return []
        if _is_per_image(kwargs.get("candidate_labels")):
            inputs = self._per_image_inputs(inputs, kwargs.pop("candidate_labels"), kwargs.pop("stuff_labels", None))
        points, boxes = kwargs.pop("points", None), kwargs.pop("boxes", None)
        if points is not None or boxes is not None:
            if isinstance(inputs, (list, tuple)):
                inputs = [
                    _PromptedImage(image, image_points, image_boxes)
                    for image, image_points, image_boxes in zip(
                        inputs, _prompts_per_image("points", points, inputs), _prompts_per_image("boxes", boxes, inputs)
                    )
                ]
            else:
                inputs = _PromptedImage(inputs, points, boxes)
        return super().__call__(inputs, **kwargs)

    @staticmethod
    def _per_image_inputs(images, candidate_labels, stuff_labels) -> list[dict]:
        """Images with per-image label lists -> one `{"image", "candidate_labels", "stuff_labels"}` dict per image."""
        if not isinstance(images, (list, tuple)) or len(images) != len(candidate_labels):
            count = len(images) if isinstance(images, (list, tuple)) else "one image, not a list"
            raise ValueError(
                f"candidate_labels holds {len(candidate_labels)} per-image label lists, so the input must be a list of "
                f"as many images; got {count}."
            )
        if _is_per_image(stuff_labels):
            if len(stuff_labels) != len(images):
                raise ValueError(
                    f"stuff_labels holds {len(stuff_labels)} per-image lists for {len(images)} images; give one per "
                    "image or one shared list."
                )
            return [
                {"image": image, "candidate_labels": labels, "stuff_labels": stuff}
                for image, labels, stuff in zip(images, candidate_labels, stuff_labels)
            ]
        if stuff_labels is None:
            return [{"image": image, "candidate_labels": labels} for image, labels in zip(images, candidate_labels)]
        # One shared stuff list: each image gets the stuff labels that are among its own classes.
        stuff = Vocabulary.from_labels(stuff_labels).labels
        per_image = [Vocabulary.from_labels(labels).labels for labels in candidate_labels]
        unused = [label for label in stuff if not any(label in labels for labels in per_image)]
        if unused:
            raise ValueError(f"Stuff label(s) {unused} are not among any image's candidate_labels.")
        return [
            {"image": image, "candidate_labels": labels, "stuff_labels": [label for label in stuff if label in names]}
            for image, labels, names in zip(images, candidate_labels, per_image)
        ]

    # ------------------------------------------------------------------ parameters

    def _sanitize_parameters(
        self,
        candidate_labels=None,
        stuff_labels=None,
        vocabulary=None,
        subtask: str | None = None,
        threshold: float | None = None,
        mask_threshold: float | None = None,
        overlap_mask_area_threshold: float | None = None,
        ensemble_mode: str | None = None,
        return_panoptic_map: bool | None = None,
        timeout: float | None = None,
        local_files_only: bool | None = None,  # forwarded by `pipeline()` to every pipeline; only loading uses it
        **unknown,
    ):
        if unknown:
            raise TypeError(
                f"Unknown parameter(s) {sorted(unknown)} for the {TASK!r} pipeline; accepted: candidate_labels, "
                "stuff_labels, vocabulary, subtask, threshold, mask_threshold, overlap_mask_area_threshold, "
                "ensemble_mode, return_panoptic_map, batch_size, timeout."
            )
        preprocess, forward, postprocess = {}, {}, {}
        if timeout is not None:
            preprocess["timeout"] = timeout
        if candidate_labels is not None and vocabulary is not None:
            raise ValueError("Pass either candidate_labels (class names) or vocabulary (a shipped or file vocabulary).")
        if _is_per_image(candidate_labels):
            raise ValueError("Per-image candidate_labels go with the call on a list of images, not with pipeline().")
        if vocabulary is not None:
            if stuff_labels is not None:
                raise ValueError("stuff_labels go with candidate_labels; a vocabulary has its own thing/stuff flags.")
            if not isinstance(vocabulary, Vocabulary):
                if not isinstance(vocabulary, (str, os.PathLike)):
                    raise TypeError(
                        "vocabulary must be a shipped vocabulary's name, a vocabulary file or a Vocabulary, got "
                        f"{type(vocabulary).__name__}; class names go to candidate_labels."
                    )
                vocabulary = load_vocabulary(vocabulary)
        elif candidate_labels is not None:
            vocabulary = resolve_vocabulary(candidate_labels, stuff_labels)
        elif stuff_labels is not None:
            raise ValueError(
                "stuff_labels were given without candidate_labels; pass them together (the model's default "
                "vocabulary has its own thing/stuff flags in config.vocabulary_is_thing)."
            )
        if vocabulary is not None:
            if getattr(self, "processor", None) is not None:
                # Tokenizing now surfaces vocabulary errors (prompts too long) before any image is read, and fills the
                # processor's cache that every batch then reads.
                self.processor.encode_vocabulary(vocabulary)
            preprocess["vocabulary"] = vocabulary
        if subtask is not None:
            if subtask not in SUBTASKS:
                raise ValueError(f"subtask must be one of {SUBTASKS}, got {subtask!r}.")
            postprocess["subtask"] = subtask
        for name, value in (
            ("threshold", threshold),
            ("mask_threshold", mask_threshold),
            ("overlap_mask_area_threshold", overlap_mask_area_threshold),
        ):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"{name} must be a number, got {value!r}.")
                postprocess[name] = float(value)
        if return_panoptic_map is not None:
            postprocess["return_panoptic_map"] = bool(return_panoptic_map)
        if ensemble_mode is not None:
            check_ensemble_mode(ensemble_mode)
            if ensemble_mode == "geometric":
                # Fails now, before any image is read, when the model does not know its training classes.
                geometric_seen_classes([], self.model.config.training_vocabulary)
            postprocess["ensemble_mode"] = ensemble_mode
        return preprocess, forward, postprocess

    def default_vocabulary(self) -> Vocabulary:
        """The model's own vocabulary (`config.vocabulary` with `config.vocabulary_is_thing`), used without labels."""
        return Vocabulary.from_entries(self.model.config.vocabulary, self.model.config.vocabulary_is_thing)

    # ------------------------------------------------------------------ the three stages

    def preprocess(self, image, vocabulary: Vocabulary | None = None, timeout: float | None = None) -> dict:
        prompted = image if isinstance(image, _PromptedImage) else None
        if prompted is not None:
            image = prompted.image
        if isinstance(image, Mapping):
            image, vocabulary = self._input_dict(image, vocabulary)
        inputs = self.processor.image_processor(images=image, return_tensors="pt", timeout=timeout)
        if inputs["pixel_values"].shape[0] != 1:
            raise ValueError(
                f"One pipeline input held {inputs['pixel_values'].shape[0]} images (a 4-D array or tensor, or a "
                "tuple); pass a list of images instead so that each gets its own result."
            )
        model_inputs = {
            "pixel_values": inputs["pixel_values"].to(self.dtype),
            "original_sizes": inputs["original_sizes"],
            "reshaped_input_sizes": inputs["reshaped_input_sizes"],
            "vocabulary": vocabulary,
        }
        if prompted is not None:
            # Each click is its own prompt; the processor maps image pixels to the model input.
            model_inputs.update(
                prepare_prompts(
                    inputs["original_sizes"],
                    inputs["reshaped_input_sizes"],
                    input_points=None if not prompted.points else [[[point] for point in prompted.points]],
                    input_boxes=None if not prompted.boxes else [list(prompted.boxes)],
                )
            )
        return model_inputs

    def _input_dict(self, item: Mapping, vocabulary: Vocabulary | None):
        """`{"image", "candidate_labels", "stuff_labels"}` -> the image and its vocabulary (labels override the call's)."""
        unknown = sorted(set(item) - set(INPUT_KEYS))
        if "image" not in item or unknown:
            raise ValueError(
                f"An input dict needs an 'image' and may have 'candidate_labels' and 'stuff_labels'; got keys "
                f"{sorted(item)}."
            )
        if item.get("candidate_labels") is not None:
            vocabulary = resolve_vocabulary(item["candidate_labels"], item.get("stuff_labels"))
        elif item.get("stuff_labels") is not None:
            raise ValueError("An input dict has stuff_labels without candidate_labels; give them together.")
        return item["image"], vocabulary

    def _forward(self, model_inputs):
        # Batched, `vocabulary` is a list with one entry per image; images sharing a vocabulary run together.
        vocabularies = model_inputs.pop("vocabulary")
        batched = isinstance(vocabularies, list)
        vocabularies = vocabularies if batched else [vocabularies]
        groups: dict = {}
        for index, vocabulary in enumerate(vocabularies):
            groups.setdefault(_vocabulary_key(vocabulary), []).append(index)
        if len(groups) == 1:
            outputs = self._forward_vocabulary(model_inputs, vocabularies[0])
            return {**outputs, "vocabulary": vocabularies if batched else vocabularies[0]}
        # Different class counts cannot share a tensor: each output becomes a list with one (unbatched) tensor per
        # image, which the pipeline's batch iterator hands to postprocess one by one.
        per_image = [None] * len(vocabularies)
        for indices in groups.values():
            selected = torch.tensor(indices)
            group_inputs = {name: value[selected] for name, value in model_inputs.items()}
            outputs = self._forward_vocabulary(group_inputs, vocabularies[indices[0]])
            for position, index in enumerate(indices):
                per_image[index] = {name: value[position] for name, value in outputs.items()}
        merged = {name: [outputs[name] for outputs in per_image] for name in per_image[0]}
        return {**merged, "vocabulary": vocabularies}

    def _forward_vocabulary(self, model_inputs, vocabulary: Vocabulary | None):
        text_inputs = {}
        if vocabulary is not None:
            text_inputs = self.processor.encode_vocabulary(vocabulary)
        elif not self.model.text_classifier.has_default_vocabulary:
            # No stored text embeddings: embed the default vocabulary's names like any other vocabulary (cached).
            text_inputs = self.processor.encode_vocabulary(self.default_vocabulary())
        if "input_points" in model_inputs or "input_boxes" in model_inputs:
            return self._forward_prompts(model_inputs, text_inputs)
        outputs = self.model(pixel_values=model_inputs["pixel_values"], **text_inputs)
        # Only per-image tensors: the pipeline's batch iterator splits every value along its first dimension.
        return {
            "class_queries_logits": outputs.class_queries_logits,
            "clip_logits": outputs.clip_logits,
            "iou_scores": outputs.iou_scores,
            "masks_queries_logits": outputs.masks_queries_logits,
            "original_sizes": model_inputs["original_sizes"],
            "reshaped_input_sizes": model_inputs["reshaped_input_sizes"],
        }

    def _forward_prompts(self, model_inputs, text_inputs):
        """Points, then boxes, each as one `segment_prompts` call on features computed once for the image."""
        features = self.model.get_image_features(model_inputs["pixel_values"])
        outputs = []
        for prompts in (
            {"input_points": model_inputs.get("input_points"), "input_labels": model_inputs.get("input_labels")},
            {"input_boxes": model_inputs.get("input_boxes")},
        ):
            if all(value is None for value in prompts.values()):
                continue
            output = self.model.segment_prompts(features, **prompts, **text_inputs)
            features = output.image_features
            outputs.append(output)
        return {
            **{
                key: torch.cat([output[key] for output in outputs], dim=1)
                for key in ("pred_masks", "iou_scores", "class_queries_logits", "clip_logits")
            },
            "original_sizes": model_inputs["original_sizes"],
            "reshaped_input_sizes": model_inputs["reshaped_input_sizes"],
        }

    def postprocess(
        self,
        model_outputs,
        subtask: str = "panoptic",
        threshold: float = 0.0,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        return_panoptic_map: bool = False,
        ensemble_mode: str | None = None,
    ):
        vocabulary = model_outputs.pop("vocabulary")
        vocabulary = vocabulary if vocabulary is not None else self.default_vocabulary()
        if "pred_masks" in model_outputs:
            prompts = self.processor.post_process_prompt_segmentation(
                model_outputs,
                vocabulary,
                target_sizes=model_outputs["original_sizes"],
                reshaped_input_sizes=model_outputs["reshaped_input_sizes"],
                ensemble_mode=ensemble_mode,
                config=self.model.config,
            )[0]
            return [
                {"score": prompt["score"], "label": prompt["label"], "iou_score": prompt["iou_score"],
                 "mask": _mask_image(prompt["mask"])}
                for prompt in prompts
            ]
        options = {
            "target_sizes": model_outputs["original_sizes"],
            "reshaped_input_sizes": model_outputs["reshaped_input_sizes"],
            "ensemble_mode": ensemble_mode,
            "config": self.model.config,
        }
        if subtask == "panoptic":
            result = self.processor.post_process_panoptic_segmentation(
                model_outputs,
                vocabulary,
                threshold=threshold,
                mask_threshold=mask_threshold,
                overlap_mask_area_threshold=overlap_mask_area_threshold,
                **options,
            )[0]
            segmentation, segments_info = result["segmentation"], result["segments_info"]
            masks = [segmentation == segment["id"] for segment in segments_info]
        elif subtask == "instance":
            result = self.processor.post_process_instance_segmentation(
                model_outputs,
                vocabulary,
                threshold=threshold,
                mask_threshold=mask_threshold,
                return_binary_maps=True,
                **options,
            )[0]
            segments_info, masks = result["segments_info"], list(result["segmentation"])
            # Where instances overlap, the map shows the best one (instances are sorted by decreasing score).
            segmentation = torch.zeros(result["segmentation"].shape[-2:], dtype=torch.int32)
            for segment, mask in reversed(list(zip(segments_info, masks))):
                segmentation[mask.cpu()] = segment["id"]
        else:
            label_map = self.processor.post_process_semantic_segmentation(model_outputs, vocabulary, **options)[0].cpu()
            present = torch.unique(label_map).tolist()
            labels = vocabulary.labels
            segments_info = [
                {"id": index + 1, "label_id": label_id, "label": labels[label_id], "score": None, "was_fused": True}
                for index, label_id in enumerate(present)
            ]
            masks = [label_map == label_id for label_id in present]
            lookup = torch.zeros(len(labels), dtype=torch.int32)
            lookup[torch.tensor(present, dtype=torch.int64)] = torch.arange(1, len(present) + 1, dtype=torch.int32)
            segmentation = lookup[label_map]

        segments = [
            {"score": segment["score"], "label": segment["label"], "mask": _mask_image(mask)}
            for segment, mask in zip(segments_info, masks)
        ]
        if not return_panoptic_map:
            return segments
        return {
            "segments": segments,
            "segmentation": segmentation.cpu().numpy().astype(np.int32),
            "segments_info": [
                {key: segment[key] for key in ("id", "label_id", "label", "score", "was_fused")}
                for segment in segments_info
            ],
        }

    def save_pretrained(self, save_directory, **kwargs):
        """Saves the model and its processor, loadable again with `pipeline("open-vocab-panoptic", model=...)`.

        transformers' default would copy this module's source into the folder as Hub custom code; PosSAM's config
        already names its thin remote code (`custom_pipelines`, see `possam.configuration.remote_code`).
        """
        self.model.save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory, **kwargs)


def register_pipeline() -> None:
    """Registers the `open-vocab-panoptic` task with transformers' `pipeline()`; `import possam` calls it."""
    from transformers import AutoModel

    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is OpenVocabPanopticPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=OpenVocabPanopticPipeline, pt_model=AutoModel, default=_NoDefaultModel(), type="image"
    )


__all__ = ["OpenVocabPanopticPipeline", "register_pipeline"]
