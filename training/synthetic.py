"""A synthetic dataset in exact COCO panoptic format, written as real files, for tests, demos and learning checks.

Each scene has stuff bands ("sky" on top, "grass" below, wavy borders, textured) and 1-4 thing instances (balls =
circles, boxes = squares, kites = triangles, ...), each class with its own colour plus noise so that a tiny model
can learn the task in a few hundred CPU steps. Some scenes hold a crowd region (a cluster of small same-class shapes
labelled as one `iscrowd=1` segment) and some a void patch (clutter labelled 0, i.e. unlabeled).

The catalogue also holds the larger world of the open-vocabulary experiment (`possam.training.open_vocabulary_world`):
there a class is a combination of shape, colour family and surface pattern that it shares with other classes (a
circle may be a red ball, an orange with dots or a gold coin with a rim), instances jitter their colour within the
family (`color_jitter`), each scene shows a few of the stuff classes (`stuff_per_scene`), and some classes can be drawn
but left unlabeled (`unlabeled_classes`: their pixels are void, their category absent), as zero-shot transfer does
with classes outside the training vocabulary. Pattern and texture sizes scale with the image, so a 384-pixel scene
resized to 128 pixels looks like a 128-pixel one.

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
            ("gradient", "stripes", "speckle", "waves", "bricks").
        pattern: for things, the surface pattern ("plain", "stripes", "dots", "rim"); unused for stuff.
    """

    names: tuple[str, ...]
    isthing: bool
    color: tuple[int, int, int]
    shape: str
    pattern: str = "plain"

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
        # The rest of the open-vocabulary world: every shape, colour family and pattern is shared by several classes.
        SyntheticClass(("orange", "tangerine"), True, (250, 135, 25), "circle", "dots"),
        SyntheticClass(("coin",), True, (215, 175, 70), "circle", "rim"),
        SyntheticClass(("book", "notebook"), True, (45, 75, 200), "square", "stripes"),
        SyntheticClass(("window", "pane"), True, (120, 215, 235), "square", "rim"),
        SyntheticClass(("tent",), True, (60, 170, 80), "triangle", "stripes"),
        SyntheticClass(("sail",), True, (235, 235, 225), "triangle", "plain"),
        SyntheticClass(("pizza", "slice"), True, (225, 160, 70), "triangle", "dots"),
        SyntheticClass(("badge", "emblem"), True, (70, 100, 220), "diamond", "rim"),
        SyntheticClass(("snow",), False, (235, 240, 245), "speckle"),
        SyntheticClass(("wall", "brick wall"), False, (165, 75, 60), "bricks"),
    )
}
DEFAULT_CLASS_NAMES = ("ball", "box", "kite", "sky", "grass")

_MIN_INSTANCE_RADIUS, _MAX_INSTANCE_RADIUS = 0.08, 0.18  # fractions of the image size
_NOISE_STD = 12.0
_REFERENCE_SIZE = 128  # texture and pattern periods are in pixels of a 128-pixel image, scaled with the image


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


def synthetic_vocabulary(
    class_names: tuple[str, ...] | list[str] | None = None, unlabeled_classes: tuple[str, ...] | list[str] = ()
) -> Vocabulary:
    """The vocabulary of a synthetic dataset (same classes, order and dataset ids as its `panoptic.json`).

    Dataset ids number all drawn classes 1..C (things first); `unlabeled_classes` are left out of the vocabulary but
    keep their ids, so that a dataset labelling only some classes shares ids with one labelling all of them.
    """
    classes = synthetic_classes(class_names)
    unknown = sorted(set(unlabeled_classes) - {cls.name for cls in classes})
    if unknown:
        raise ValueError(f"unlabeled_classes {unknown} are not among the drawn classes {[cls.name for cls in classes]}.")
    labeled = [(index + 1, cls) for index, cls in enumerate(classes) if cls.name not in unlabeled_classes]
    if not labeled:
        raise ValueError("unlabeled_classes leaves no labeled class.")
    return Vocabulary(
        class_names=[list(cls.names) for _, cls in labeled],
        is_thing=[cls.isthing for _, cls in labeled],
        dataset_ids=[dataset_id for dataset_id, _ in labeled],
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


def _thing_pattern(
    pattern: str, rows: np.ndarray, cols: np.ndarray, cy: float, cx: float, radius: float, size: int
) -> np.ndarray:
    """A brightness offset per pixel of a thing (`rows`, `cols` index its mask): its surface pattern."""
    scale = size / _REFERENCE_SIZE
    if pattern == "plain":
        return np.zeros(rows.shape)
    if pattern == "stripes":
        return 45.0 * (np.sin(2 * np.pi * (rows + cols) / (7.0 * scale)) > 0) - 22.5
    if pattern == "dots":
        period = 6.0 * scale
        dy, dx = (rows % period) - period / 2, (cols % period) - period / 2
        return -60.0 * (dy**2 + dx**2 <= (0.3 * period) ** 2)
    if pattern == "rim":
        # A dark frame: the outer third of the shape's extent.
        distance = np.maximum(np.abs(rows - cy), np.abs(cols - cx)) / radius
        return -70.0 * (distance >= 0.55)
    raise ValueError(f"Unknown thing pattern {pattern!r}.")


def _stuff_texture(texture: str, yy: np.ndarray, xx: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A brightness offset map (H, W) that gives each stuff class a recognisable, non-flat texture."""
    phase = rng.uniform(0, 2 * np.pi)
    scale = size / _REFERENCE_SIZE
    if texture == "gradient":
        return 40.0 * (yy / size - 0.5)
    if texture == "stripes":
        return 18.0 * np.sin(2 * np.pi * xx / (6.0 * scale) + phase)
    if texture == "speckle":
        # Speckles a few pixels wide at any size: drawn on the 128-pixel grid, then enlarged.
        coarse = rng.random((int(np.ceil(size / scale)),) * 2) > 0.85
        index = np.minimum((np.arange(size) / scale).astype(int), coarse.shape[0] - 1)
        return 25.0 * coarse[np.ix_(index, index)]
    if texture == "waves":
        return 18.0 * np.sin(2 * np.pi * (yy + 3 * scale * np.sin(2 * np.pi * xx / (24.0 * scale))) / (8.0 * scale) + phase)
    if texture == "bricks":
        height = 8.0 * scale
        course = np.floor(yy / height)
        offset = (course % 2) * 8.0 * scale
        mortar = ((yy % height) < 1.5 * scale) | (((xx + offset) % (16.0 * scale)) < 1.5 * scale)
        return 40.0 * mortar
    raise ValueError(f"Unknown stuff texture {texture!r}.")


def _unique_segment_ids(rng: np.random.Generator, count: int) -> list[int]:
    # Random ids spread over all three PNG channels, so that decoders that ignore G or B fail loudly.
    ids: list[int] = []
    while len(ids) < count:
        candidate = int(rng.integers(1, 256**3))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def render_scene(
    classes: list[SyntheticClass],
    size: int,
    rng: np.random.Generator,
    max_instances: int,
    crowd_probability: float,
    void_probability: float,
    stuff_per_scene: int | None = None,
    color_jitter: float = 0.0,
    unlabeled: frozenset[str] = frozenset(),
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Draws one scene. Returns the RGB image (H, W, 3) uint8, the segment-id map (H, W) int64, segments_info.

    Segments of classes named in `unlabeled` are drawn but left void (id 0, not in segments_info).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    things = [(index + 1, cls) for index, cls in enumerate(classes) if cls.isthing]
    stuff = [(index + 1, cls) for index, cls in enumerate(classes) if not cls.isthing]
    if stuff_per_scene is not None and stuff_per_scene < len(stuff):
        chosen = np.sort(rng.choice(len(stuff), size=stuff_per_scene, replace=False))
        stuff = [stuff[index] for index in chosen]

    def colour(cls: SyntheticClass) -> np.ndarray:
        jitter = rng.uniform(-color_jitter, color_jitter, size=3) if color_jitter else 0.0
        return np.asarray(cls.color, dtype=np.float64) + jitter

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
        image[mask] = colour(cls) + texture[mask, None]

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
            image[crowd] = colour(cls)
            occupied |= crowd

    for _ in range(int(rng.integers(1, max_instances + 1))):
        category_id, cls = things[int(rng.integers(len(things)))]
        radius = rng.uniform(_MIN_INSTANCE_RADIUS, _MAX_INSTANCE_RADIUS) * size
        mask = place(cls.shape, radius)
        if mask is None:
            continue
        segment_key[mask] = len(segments)
        segments.append((category_id, cls, 0))
        # A soft radial shading keeps things from being flat colour blobs; the pattern is drawn on top.
        rows, cols = np.nonzero(mask)
        cy, cx = rows.mean(), cols.mean()
        shade = 25.0 * (1.0 - np.hypot(rows - cy, cols - cx) / radius)
        shade = shade + _thing_pattern(cls.pattern, rows, cols, cy, cx, radius, size)
        image[mask] = colour(cls) + shade[:, None]
        occupied |= mask

    image += rng.normal(0.0, _NOISE_STD, size=image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    ids = _unique_segment_ids(rng, len(segments))
    segment_ids = np.zeros((size, size), dtype=np.int64)
    segments_info = []
    for key, (category_id, cls, iscrowd) in enumerate(segments):
        mask = segment_key == key
        if not mask.any() or cls.name in unlabeled:  # a stuff band fully hidden by things or void; unlabeled
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
    stuff_per_scene: int | None = None,
    color_jitter: float = 0.0,
    unlabeled_classes: tuple[str, ...] | list[str] = (),
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
        stuff_per_scene: how many of the stuff classes each scene shows as bands (default: all of them).
        color_jitter: each segment's colour moves by up to this much per channel from its class colour.
        unlabeled_classes: classes drawn in the scenes but labelled void (pixels 0, no category): the classes a
            zero-shot model must not learn from.

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
    if stuff_per_scene is not None and stuff_per_scene < 1:
        raise ValueError(f"stuff_per_scene must be >= 1, got {stuff_per_scene}.")
    vocabulary = synthetic_vocabulary([cls.name for cls in classes], unlabeled_classes)

    root = os.fspath(output_dir)
    image_dir, panoptic_dir = os.path.join(root, "images"), os.path.join(root, "panoptic")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(panoptic_dir, exist_ok=True)

    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])
        image, segment_ids, segments_info = render_scene(
            classes, image_size, rng, max_instances, crowd_probability, void_probability,
            stuff_per_scene, color_jitter, frozenset(unlabeled_classes),
        )
        name = f"synthetic_{index:06d}"
        Image.fromarray(image).save(os.path.join(image_dir, f"{name}.png"))
        Image.fromarray(segment_ids_to_rgb(segment_ids)).save(os.path.join(panoptic_dir, f"{name}.png"))
        images.append({"id": index, "file_name": f"{name}.png", "width": image_size, "height": image_size})
        annotations.append({"image_id": index, "file_name": f"{name}.png", "segments_info": segments_info})

    categories = [
        {"id": dataset_id, "name": cls.name, "isthing": int(cls.isthing), "color": list(cls.color)}
        for dataset_id, cls in enumerate(classes, start=1)
        if cls.name not in unlabeled_classes
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
