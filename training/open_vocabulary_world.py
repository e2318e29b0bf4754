"""The synthetic world of PosSAM's open-vocabulary experiment: 12 thing and 6 stuff classes, a fixed seen/unseen split.

PosSAM's claim is zero-shot transfer: trained on the panoptic labels of some classes (COCO), it names segments of
classes it never had labels for (ADE20K) through a CLIP that saw them all on the web. This module is the smallest
honest copy of that setting:

- the world: classes are combinations of a shape, a colour family and a surface pattern, each attribute shared by
  several classes (`possam.training.synthetic.SYNTHETIC_CLASSES`), with per-instance colour jitter; so a mask has to
  come from objectness and a name from CLIP, not from a colour lookup;
- the split, shipped as the vocabularies `synthetic_seen` (8 things, 4 stuff) and `synthetic_unseen` (4 things,
  2 stuff): every unseen class shares its shape, pattern or colour family with seen ones, but not the combination;
- training data labels the seen classes only: unseen classes are drawn in the training scenes but labelled void, as
  COCO images show ADE20K-only classes unlabeled; evaluation data labels every class with the same category ids.

`possam pretrain-clip` trains the toy CLIP on image-caption pairs of all 18 classes (the "web"), `possam train` trains
PosSAM on the seen labels with that CLIP frozen, and evaluation reports PQ on seen and unseen classes.
"""

from __future__ import annotations

import os

from ..configuration import Vocabulary, load_vocabulary
from .synthetic import SyntheticPanopticDataset, generate_synthetic_coco_panoptic


# Things first, then stuff (COCO's order): dataset ids 1..18 follow this order in every split.
WORLD_CLASSES = (
    "ball", "box", "kite", "gem", "orange", "coin", "book", "window", "tent", "sail", "pizza", "badge",
    "sky", "grass", "sand", "water", "snow", "wall",
)
UNSEEN_CLASSES = ("orange", "window", "tent", "badge", "sand", "water")
SEEN_CLASSES = tuple(name for name in WORLD_CLASSES if name not in UNSEEN_CLASSES)

# Scene statistics of the world (every split draws scenes the same way; only the labels differ).
WORLD_SCENE_OPTIONS = {"max_instances": 4, "stuff_per_scene": 2, "color_jitter": 20.0, "crowd_probability": 0.1}


def world_vocabularies() -> tuple[Vocabulary, Vocabulary]:
    """The shipped split: (`synthetic_seen`, `synthetic_unseen`) vocabularies, dataset ids of the world's order."""
    return load_vocabulary("synthetic_seen"), load_vocabulary("synthetic_unseen")


def generate_world_split(
    output_dir: str | os.PathLike,
    num_images: int,
    labels: str,
    image_size: int = 128,
    seed: int = 0,
) -> SyntheticPanopticDataset:
    """Writes scenes of the open-vocabulary world in COCO panoptic format.

    Args:
        output_dir: folder to write (see `generate_synthetic_coco_panoptic`).
        num_images: number of scenes.
        labels: `"seen"` (training data: unseen classes are drawn but labelled void, their categories absent) or
            `"all"` (evaluation data: every class labelled).
        image_size: scene size in pixels; patterns scale with it, so any size shows the same world.
        seed: scenes are a deterministic function of (seed, index).
    """
    if labels not in ("seen", "all"):
        raise ValueError(f"labels must be 'seen' or 'all', got {labels!r}.")
    return generate_synthetic_coco_panoptic(
        output_dir,
        num_images=num_images,
        image_size=image_size,
        seed=seed,
        class_names=WORLD_CLASSES,
        unlabeled_classes=UNSEEN_CLASSES if labels == "seen" else (),
        **WORLD_SCENE_OPTIONS,
    )
