"""`possam predict`: segment images with any vocabulary and write pictures and COCO-panoptic-style results.

    possam predict street.jpg park.png --model path/to/possam --labels "car,person|pedestrian,road,sky" \\
        --stuff "road,sky" --out predictions/

On the command line commas separate CLASSES and `|` separates the synonyms of one class: "person|pedestrian" is one
class named "person" (its label) that CLIP also matches as "pedestrian". For each image `<stem>` it writes:

- `<stem>_overlay.png`: the image with one colour per segment and each segment's label (and score) written on it;
- `<stem>_panoptic.png`: the segment ids in COCO panoptic PNG encoding (id = R + 256 G + 256^2 B, 0 = no segment);
- `<stem>.json`: `{"image", "width", "height", "segments_info": [{"id", "label_id", "label", "score", "was_fused",
  "area"}]}`, ids matching the panoptic PNG.

Every file is written atomically (a temporary file renamed into place), so an interrupted run leaves complete files
only. Exit status: 0 on success; 1 when the model, a vocabulary file or the output folder cannot be used (one `error:`
line naming it, nothing written), or when some images cannot be decoded (every other image is still segmented, then one
`error:` line per unreadable image); 2 for bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from ..configuration.vocabulary import SYNONYM_SEPARATOR, VocabularyError, split_class_list


class _UsageError(Exception):
    """Bad command-line values found after parsing (exit status 2, like argparse's own errors)."""


def parse_class_list(text: str, option: str) -> list[str]:
    """`"cat,person|child,grass"` -> `["cat", "person,child", "grass"]`: commas separate classes, `|` synonyms."""
    try:
        return [",".join(names) for names in split_class_list(text, option)]
    except VocabularyError as error:
        raise _UsageError(str(error)) from None


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Open-vocabulary panoptic, instance or semantic segmentation of images with PosSAM.",
        epilog=(
            f"In --labels and --stuff, commas separate classes and '{SYNONYM_SEPARATOR}' separates synonyms of one "
            f'class: --labels "cat,person{SYNONYM_SEPARATOR}child,grass" --stuff grass is 3 classes, the second '
            "one named 'person' and 'child'. Without --labels or --vocab the model's own vocabulary is used."
        ),
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to segment")
    parser.add_argument("--model", required=True, help="a PosSAM checkpoint folder (model + processor) or Hub id")
    vocabulary = parser.add_mutually_exclusive_group()
    vocabulary.add_argument("--labels", help='classes, e.g. "cat,dog,person|child,grass" (see below)')
    vocabulary.add_argument(
        "--vocab",
        help="a vocabulary file ('id:name1,name2[:thing|:stuff]' lines) or a shipped one: coco_panoptic, ade20k_150, "
        "ade20k_847",
    )
    parser.add_argument("--stuff", help='which --labels are stuff (merged per class), e.g. "grass,sky"')
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--subtask", choices=("panoptic", "instance", "semantic"), default="panoptic")
    parser.add_argument("--threshold", type=float, default=0.0, help="minimum segment score (default 0.0)")
    parser.add_argument("--mask_threshold", type=float, default=0.5, help="mask probability cut (default 0.5)")
    parser.add_argument(
        "--overlap_mask_area_threshold",
        type=float,
        default=0.8,
        help="panoptic: minimum fraction of its mask a segment keeps (default 0.8)",
    )
    parser.add_argument(
        "--ensemble_mode",
        choices=("mase", "geometric", "ldp_only", "clip_only"),
        help="override the model's ensemble of LDP and CLIP classification",
    )
    parser.add_argument("--batch_size", type=int, default=1, help="images per model call (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the overlay colours (default 0.5)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile PosSAM's heavy stages (first image pays about a minute of compilation; pays off on many)",
    )
    return parser


def _check_arguments(args) -> None:
    if args.batch_size < 1:
        raise _UsageError(f"--batch_size must be at least 1, got {args.batch_size}.")
    for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold", "alpha"):
        value = getattr(args, name)
        if name != "threshold" and not 0.0 <= value <= 1.0:
            raise _UsageError(f"--{name} must be in [0, 1], got {value}.")
    if args.stuff is not None and args.labels is None:
        raise _UsageError("--stuff needs --labels (a --vocab file carries its own thing/stuff flags).")
    stems = {}
    for image in args.images:
        stem = Path(image).stem
        if stem in stems:
            raise _UsageError(f"{stems[stem]!r} and {image!r} would write the same output files {stem}_*.")
        stems[stem] = image


def _resolve_vocabulary(args):
    """The vocabulary of the run (`None` = the model's own). --labels errors are usage errors (exit 2)."""
    from ..configuration.vocabulary import Vocabulary, VocabularyError, load_vocabulary

    if args.vocab is not None:
        return load_vocabulary(args.vocab)  # VocabularyError: a file that cannot be read, exit 1
    if args.labels is None:
        return None
    labels = parse_class_list(args.labels, "--labels")
    stuff = parse_class_list(args.stuff, "--stuff") if args.stuff is not None else None
    try:
        return Vocabulary.from_labels(labels, stuff_labels=stuff)
    except VocabularyError as error:
        raise _UsageError(str(error)) from None


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu.")


def _load_pipeline(model: str, device: str):
    """The pipeline of `model`. The model is loaded first through `PosSamModel.from_pretrained`, whose one-line
    `ModelLoadError` names the folder or file at fault (transformers' `pipeline()` would bury it under "Could not load
    model ... See the original errors")."""
    from transformers import pipeline

    from .. import PosSamModel
    from .pipeline_possam import TASK
    from .processing_possam import PosSamProcessor

    loaded = PosSamModel.from_pretrained(model)
    try:
        processor = PosSamProcessor.from_pretrained(model)
    except (OSError, ValueError, TypeError) as error:
        detail = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
        raise ValueError(
            f"{model}: cannot load the processor saved with the model ({detail}); save it with "
            "processor.save_pretrained into the model folder."
        ) from None
    return pipeline(TASK, model=loaded, processor=processor, device=device)


def _missing_file_error(path: str) -> str | None:
    if not os.path.exists(path):
        return f"image {path!r} does not exist."
    if not os.path.isfile(path):
        return f"image {path!r} is not a file."
    return None


def _read_image(path: str, where: str) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB (EXIF orientation applied, transparency on white)."""
    from .image_inputs import load_image

    array = load_image(path, where=where)  # ValueError naming `where` and the file when it cannot be decoded
    # High-bit-depth files come back as float in [0, 255]; the overlay and the model both take 8 bits.
    return array if array.dtype == np.uint8 else np.clip(np.round(array), 0, 255).astype(np.uint8)


def _write_outputs(image_path: str, image: np.ndarray, result: dict, out_dir: Path, alpha: float) -> None:
    import PIL.Image

    from .output_files import write_atomically, write_json_atomically
    from .panoptic_png import segment_ids_to_rgb
    from .visualization import draw_segmentation_overlay

    stem = Path(image_path).stem
    segmentation = result["segmentation"]
    ids, counts = np.unique(segmentation, return_counts=True)
    areas = dict(zip(ids.tolist(), counts.tolist()))
    segments_info = [{**segment, "area": int(areas.get(segment["id"], 0))} for segment in result["segments_info"]]
    overlay = draw_segmentation_overlay(image, segmentation, segments_info, alpha=alpha)
    write_atomically(out_dir / f"{stem}_overlay.png", lambda handle: overlay.save(handle, format="PNG"))
    panoptic = PIL.Image.fromarray(segment_ids_to_rgb(segmentation))
    write_atomically(out_dir / f"{stem}_panoptic.png", lambda handle: panoptic.save(handle, format="PNG"))
    record = {
        "image": image_path,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "segments_info": segments_info,
    }
    write_json_atomically(out_dir / f"{stem}.json", record)


def run(args) -> list[str]:
    """Segments `args.images` and writes the three files per image into `args.out`.

    Every readable image is processed; an image that cannot be decoded is skipped. Returns the errors of the skipped
    images (empty when all were written).
    """
    from tqdm.auto import tqdm

    from .output_files import OutputFolder

    vocabulary = _resolve_vocabulary(args)
    for image in args.images:
        error = _missing_file_error(image)
        if error:
            raise ValueError(error)
    _check_device(args.device)
    with OutputFolder(args.out) as out_dir:  # created and checked writable now; removed again if left empty
        segmenter = _load_pipeline(args.model, args.device)
        if args.compile:
            segmenter.model.compile_stages()
        options = {
            "subtask": args.subtask,
            "threshold": args.threshold,
            "mask_threshold": args.mask_threshold,
            "overlap_mask_area_threshold": args.overlap_mask_area_threshold,
            "return_panoptic_map": True,
        }
        if vocabulary is not None:
            options["candidate_labels"] = vocabulary
        if args.ensemble_mode is not None:
            options["ensemble_mode"] = args.ensemble_mode
        unreadable = []
        with tqdm(total=len(args.images), unit="image", desc="possam predict") as progress:
            for start in range(0, len(args.images), args.batch_size):
                paths, images = [], []
                for offset, path in enumerate(args.images[start : start + args.batch_size]):
                    try:
                        images.append(_read_image(path, where=f"image {start + offset + 1} of {len(args.images)}"))
                        paths.append(path)
                    except ValueError as error:
                        unreadable.append(str(error))
                if images:
                    results = segmenter(images, batch_size=len(images), **options)
                    for path, image, result in zip(paths, images, results):
                        _write_outputs(path, image, result, out_dir, args.alpha)
                progress.update(len(args.images[start : start + args.batch_size]))
    written = len(args.images) - len(unreadable)
    print(f"{written} of {len(args.images)} images segmented; overlays, panoptic PNGs and JSON are in {out_dir}")
    return unreadable


def main(argv: list[str] | None = None, prog: str = "possam predict") -> int:
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or argparse's usage errors (2)
        return int(exit_.code or 0)
    try:
        _check_arguments(args)
        unreadable = run(args)
    except _UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    for error in unreadable:
        print(f"{prog}: error: {error}", file=sys.stderr)
    return 1 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
