"""`possam prepare-ade20k`: convert ADE20K (ADEChallengeData2016 + its instance annotations) to COCO panoptic format.

    possam prepare-ade20k datasets/ADEChallengeData2016 --split validation --workers 8

writes `ade20k_panoptic_val.json` and `ade20k_panoptic_val/` next to the data (or under `--out`); train or evaluate
with `--eval_annotations .../ade20k_panoptic_val.json --eval_images .../images/validation --eval_synonyms ade20k_150`.
"""

from __future__ import annotations

import argparse
import sys

from .ade20k import ADE20KConversionError, convert_ade20k_to_coco_panoptic


def main(argv: list[str], prog: str = "possam prepare-ade20k") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("ade_root", help="the ADEChallengeData2016 folder (images/, annotations/, annotations_instance/)")
    parser.add_argument("--split", default="validation", choices=("training", "validation", "train", "val"))
    parser.add_argument("--out", default=None, help="output folder (default: ade_root)")
    parser.add_argument("--workers", type=int, default=1, help="processes converting images in parallel")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return int(exit.code or 0)
    try:
        result = convert_ade20k_to_coco_panoptic(args.ade_root, args.out or args.ade_root, args.split, args.workers)
    except (ADE20KConversionError, OSError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    print(
        f"Wrote {result.num_images} images' panoptic annotations: {result.json_path} and {result.panoptic_dir}. "
        f"Images stay in {result.image_dir}."
    )
    return 0
