"""A synthetic dataset in exact COCO panoptic format, written as real files, for tests, demos and learning checks.

Each scene has stuff bands ("sky" on top, "grass" below, wavy borders, textured) and 1-4 thing instances (balls =
circles, boxes = squares, kites = triangles, ...), each class with its own colour plus noise so that a tiny model
can learn the task in a few hundred CPU steps. Some scenes hold a crowd region (a cluster of small same-class shapes
labelled as one `iscrowd=1` segment) and some a void patch (clutter labelled 0, i.e. unlabeled).

Layout written under `output_dir`:

    images/<name>.png      RGB image
    panoptic/<name>.png    segment ids encoded as id = R + 256 * G + 256**2 * B (0 = void)
    panoptic.json          {"info", "images", "annotations", "categories"} in COCO panoptic format
    vocabulary.txt         the classes as a PosSAM vocabulary file (`possam.configuration.Vocabulary`)

Everything is a deterministic function of `seed` (each image draws from its own generator seeded by (seed, index),
so image i does not depend on how many images are generated).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..configuration import Vocabulary
from ..processing.panoptic_png import segment_area_and_bbox, segment_ids_to_rgb


@dataclass(frozen=True)
class SyntheticClass:
    """One class of the synthetic world.

    Attributes:
        names: display name first, then synonyms (the vocabulary entry).
        isthing: whether instances are separate segments (thing) or one region per class (stuff).
        color: base RGB colour; pixels get this colour plus texture and noise.
        shape: for things, the drawn shape ("circle", "square", "triangle", "diamond"); for stuff, the texture
            ("gradient", "stripes", "speckle", "waves").
    """

    names: tuple[str, ...]
    isthing: bool
    color: tuple[int, int, int]
    shape: str

    @property
    def name(self) -> str:
        return self.names[0]


SYNTHETIC_CLASSES: dict[str, SyntheticClass] = {
    cls.name: cls
    for cls in (
        SyntheticClass(("ball", "sphere"), True, (220, 40, 40), "circle"),
        SyntheticClass(("box", "cube", "crate"), True, (240, 200, 30), "square"),
        SyntheticClass(("kite",), True, (190, 50, 210), "triangle"),
        SyntheticClass(("gem", "diamond"), True, (40, 220, 200), "diamond"),
        SyntheticClass(("sky",), False, (120, 170, 235), "gradient"),
        SyntheticClass(("grass", "lawn"), False, (60, 140, 45), "stripes"),
        SyntheticClass(("sand",), False, (205, 180, 120), "speckle"),
        SyntheticClass(("water", "sea"), False, (30, 70, 150), "waves"),
    )
}
DEFAULT_CLASS_NAMES = ("ball", "box", "kite", "sky", "grass")

_MIN_INSTANCE_RADIUS, _MAX_INSTANCE_RADIUS = 0.08, 0.18  # fractions of the image size
_NOISE_STD = 12.0


@dataclass(frozen=True)
class SyntheticPanopticDataset:
    """Paths of a generated dataset and its vocabulary (label id i = i-th category of `panoptic.json`)."""

    root: str
    image_dir: str
    panoptic_dir: str
    json_path: str
    vocabulary_path: str
    vocabulary: Vocabulary
    num_images: int


def synthetic_classes(class_names: tuple[str, ...] | list[str] | None = None) -> list[SyntheticClass]:
    """The classes of a synthetic dataset: things first, then stuff (COCO's category order), dataset ids 1..C."""
    names = list(DEFAULT_CLASS_NAMES if class_names is None else class_names)
    unknown = [name for name in names if name not in SYNTHETIC_CLASSES]
    if unknown:
        raise ValueError(f"Unknown synthetic classes {unknown}; available: {sorted(SYNTHETIC_CLASSES)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names has duplicates: {names}.")
    classes = [SYNTHETIC_CLASSES[name] for name in names]
    things = [cls for cls in classes if cls.isthing]
    stuff = [cls for cls in classes if not cls.isthing]
    if not things or not stuff:
        raise ValueError(f"A synthetic scene needs at least one thing and one stuff class, got {names}.")
    return things + stuff


def synthetic_vocabulary(class_names: tuple[str, ...] | list[str] | None = None) -> Vocabulary:
    """The vocabulary of a synthetic dataset (same classes, order and dataset ids as its `panoptic.json`)."""
    classes = synthetic_classes(class_names)
    return Vocabulary(
        class_names=[list(cls.names) for cls in classes],
        is_thing=[cls.isthing for cls in classes],
        dataset_ids=list(range(1, len(classes) + 1)),
    )


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= radius**2
    if shape == "square":
        half = 0.85 * radius
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= radius
    if shape == "triangle":
        # Upward-pointing isosceles triangle: apex at (cy - r, cx), base on y = cy + r with half-width r.
        below_apex = dy >= -radius
        above_base = dy <= radius
        inside_sides = np.abs(dx) <= (dy + radius) / 2
        return below_apex & above_base & inside_sides
    raise ValueError(f"Unknown thing shape {shape!r}.")


def _stuff_texture(texture: str, yy: np.ndarray, xx: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A brightness offset map (H, W) that gives each stuff class a recognisable, non-flat texture."""
    phase = rng.uniform(0, 2 * np.pi)
    if texture == "gradient":
        return 40.0 * (yy / size - 0.5)
    if texture == "stripes":
        return 18.0 * np.sin(2 * np.pi * xx / 6.0 + phase)
    if texture == "speckle":
        return 25.0 * (rng.random(yy.shape) > 0.85)
    if texture == "waves":
        return 18.0 * np.sin(2 * np.pi * (yy + 3 * np.sin(2 * np.pi * xx / 24.0)) / 8.0 + phase)
    raise ValueError(f"Unknown stuff texture {texture!r}.")


def _unique_segment_ids(rng: np.random.Generator, count: int) -> list[int]:
    # Random ids spread over all three PNG channels, so that decoders that ignore G or B fail loudly.
    ids: list[int] = []
    while len(ids) < count:
        candidate = int(rng.integers(1, 256**3))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def _render_scene(
    classes: list[SyntheticClass],
    size: int,
    rng: np.random.Generator,
    max_instances: int,
    crowd_probability: float,
    void_probability: float,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Draws one scene. Returns the RGB image (H, W, 3) uint8, the segment-id map (H, W) int64, segments_info."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    things = [(index + 1, cls) for index, cls in enumerate(classes) if cls.isthing]
    stuff = [(index + 1, cls) for index, cls in enumerate(classes) if not cls.isthing]

    # Per pixel, the index of its segment in `segments` (-1 = void); ids are drawn once all segments are known.
    segment_key = np.full((size, size), -1, dtype=np.int64)
    segments: list[tuple[int, SyntheticClass, int]] = []  # (category id, class, iscrowd)
    image = np.zeros((size, size, 3), dtype=np.float64)

    # Stuff: horizontal bands with wavy borders, in class order (sky above grass).
    borders = np.sort(rng.uniform(0.3, 0.7, size=len(stuff) - 1)) * size if len(stuff) > 1 else np.array([])
    band = np.zeros((size, size), dtype=np.int64)
    for border in borders:
        amplitude, period, phase = rng.uniform(2, 6), rng.uniform(30, 70), rng.uniform(0, 2 * np.pi)
        band += yy >= border + amplitude * np.sin(2 * np.pi * xx / period + phase)
    for band_index, (category_id, cls) in enumerate(stuff):
        mask = band == band_index
        if not mask.any():
            continue
        segment_key[mask] = len(segments)
        segments.append((category_id, cls, 0))
        texture = _stuff_texture(cls.shape, yy, xx, size, rng)
        image[mask] = np.asarray(cls.color, dtype=np.float64) + texture[mask, None]

    occupied = np.zeros((size, size), dtype=bool)

    if rng.random() < void_probability:
        # Unlabeled clutter: a grey noisy patch over the stuff, kept clear of things so they stay whole.
        height, width = rng.integers(size // 10, size // 4 + 1, size=2)
        top, left = rng.integers(0, size - height), rng.integers(0, size - width)
        void = (yy >= top) & (yy < top + height) & (xx >= left) & (xx < left + width)
        segment_key[void] = -1
        image[void] = rng.uniform(60, 200, size=(int(void.sum()), 1)) * np.ones(3)
        occupied |= void

    def place(shape: str, radius: float, tries: int = 30) -> np.ndarray | None:
        for _ in range(tries):
            cy, cx = rng.uniform(radius, size - radius, size=2)
            mask = _shape_mask(shape, yy, xx, cy, cx, radius)
            if mask.sum() >= 9 and not (mask & occupied).any():
                return mask
        return None

    if rng.random() < crowd_probability:
        # A crowd: several small shapes of one thing class, annotated as a single iscrowd=1 segment.
        category_id, cls = things[int(rng.integers(len(things)))]
        crowd = np.zeros((size, size), dtype=bool)
        center = rng.uniform(0.25 * size, 0.75 * size, size=2)
        for _ in range(int(rng.integers(5, 9))):
            radius = rng.uniform(0.03, 0.05) * size
            cy, cx = center + rng.uniform(-0.12, 0.12, size=2) * size
            crowd |= _shape_mask(cls.shape, yy, xx, cy, cx, radius) & ~occupied
        if crowd.sum() >= 9:
            segment_key[crowd] = len(segments)
            segments.append((category_id, cls, 1))
            image[crowd] = np.asarray(cls.color, dtype=np.float64)
            occupied |= crowd

    for _ in range(int(rng.integers(1, max_instances + 1))):
        category_id, cls = things[int(rng.integers(len(things)))]
        radius = rng.uniform(_MIN_INSTANCE_RADIUS, _MAX_INSTANCE_RADIUS) * size
        mask = place(cls.shape, radius)
        if mask is None:
            continue
        segment_key[mask] = len(segments)
        segments.append((category_id, cls, 0))
        # A soft radial shading keeps things from being flat colour blobs.
        rows, cols = np.nonzero(mask)
        shade = 25.0 * (1.0 - np.hypot(rows - rows.mean(), cols - cols.mean()) / radius)
        image[mask] = np.asarray(cls.color, dtype=np.float64) + shade[:, None]
        occupied |= mask

    image += rng.normal(0.0, _NOISE_STD, size=image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    ids = _unique_segment_ids(rng, len(segments))
    segment_ids = np.zeros((size, size), dtype=np.int64)
    segments_info = []
    for key, (category_id, _, iscrowd) in enumerate(segments):
        mask = segment_key == key
        if not mask.any():  # a stuff band fully hidden by things or void
            continue
        segment_ids[mask] = ids[key]
        area, bbox = segment_area_and_bbox(mask)
        segments_info.append(
            {"id": ids[key], "category_id": category_id, "area": area, "bbox": bbox, "iscrowd": iscrowd}
        )
    return image, segment_ids, segments_info


def generate_synthetic_coco_panoptic(
    output_dir: str | os.PathLike,
    num_images: int = 16,
    image_size: int = 128,
    seed: int = 0,
    class_names: tuple[str, ...] | list[str] | None = None,
    max_instances: int = 4,
    crowd_probability: float = 0.25,
    void_probability: float = 0.25,
) -> SyntheticPanopticDataset:
    """Writes a synthetic COCO panoptic dataset (images, panoptic PNGs, panoptic.json, vocabulary.txt).

    Args:
        output_dir: folder to create (it may exist; files with the same names are overwritten).
        num_images: number of scenes.
        image_size: height = width of every image, in pixels (at least 32).
        seed: the only source of randomness; the same arguments give byte-identical files.
        class_names: classes to use, from `SYNTHETIC_CLASSES` (default: ball, box, kite, sky, grass); at least one
            thing and one stuff class.
        max_instances: each scene draws 1..max_instances thing instances (fewer if they do not fit).
        crowd_probability: chance that a scene has a crowd (iscrowd=1) region.
        void_probability: chance that a scene has an unlabeled (id 0) patch.

    Returns:
        `SyntheticPanopticDataset` with the paths and the vocabulary (category order = contiguous label ids).
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}.")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}.")
    if max_instances < 1:
        raise ValueError(f"max_instances must be >= 1, got {max_instances}.")
    for name, probability in (("crowd_probability", crowd_probability), ("void_probability", void_probability)):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {probability}.")
    classes = synthetic_classes(class_names)
    vocabulary = synthetic_vocabulary([cls.name for cls in classes])

    root = os.fspath(output_dir)
    image_dir, panoptic_dir = os.path.join(root, "images"), os.path.join(root, "panoptic")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(panoptic_dir, exist_ok=True)

    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])
        image, segment_ids, segments_info = _render_scene(
            classes, image_size, rng, max_instances, crowd_probability, void_probability
        )
        name = f"synthetic_{index:06d}"
        Image.fromarray(image).save(os.path.join(image_dir, f"{name}.png"))
        Image.fromarray(segment_ids_to_rgb(segment_ids)).save(os.path.join(panoptic_dir, f"{name}.png"))
        images.append({"id": index, "file_name": f"{name}.png", "width": image_size, "height": image_size})
        annotations.append({"image_id": index, "file_name": f"{name}.png", "segments_info": segments_info})

    categories = [
        {"id": dataset_id, "name": cls.name, "isthing": int(cls.isthing), "color": list(cls.color)}
        for dataset_id, cls in zip(vocabulary.dataset_ids, classes)
    ]
    info = {"description": f"PosSAM synthetic panoptic dataset (seed {seed})", "version": "1.0"}
    json_path = os.path.join(root, "panoptic.json")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump({"info": info, "images": images, "annotations": annotations, "categories": categories}, handle)
    vocabulary_path = os.path.join(root, "vocabulary.txt")
    with open(vocabulary_path, "w", encoding="utf-8") as handle:
        handle.write(vocabulary.to_text())
    return SyntheticPanopticDataset(
        root=root,
        image_dir=image_dir,
        panoptic_dir=panoptic_dir,
        json_path=json_path,
        vocabulary_path=vocabulary_path,
        vocabulary=vocabulary,
        num_images=num_images,
    )
