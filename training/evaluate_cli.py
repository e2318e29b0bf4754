"""`possam evaluate`: PQ/SQ/RQ (all, things, stuff; seen and unseen with `--seen_classes`), mask AP and mIoU of a
PosSAM checkpoint on a panoptic split, as JSON (`eval_pq`, `eval_pq_things`, ..., `eval_map`, `eval_miou`).

    possam evaluate --model_name_or_path runs/coco --eval_annotations ade/panoptic_val.json --eval_images ade/images \
        --seen_classes coco_panoptic --ensemble_mode mase,clip_only

Runs on one device, or on several under `accelerate launch` / `torchrun` (each process takes a share of the images).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from .arguments import DataArguments, ModelArguments, parse_arguments


@dataclass
class OutputArguments:
    output_json: str | None = field(default=None, metadata={"help": "Also write the metrics to this JSON file."})


def main(argv: list[str], prog: str = "possam evaluate") -> int:
    model_args, data_args, output_args = parse_arguments(argv, (ModelArguments, DataArguments, OutputArguments), prog)
    from accelerate import Accelerator

    from ..processing.output_files import check_writable_file, write_json_atomically
    from .run import evaluate, leave_process_group

    accelerator = Accelerator()
    try:
        if output_args.output_json:
            check_writable_file(output_args.output_json)  # before the model runs, not after
        metrics = evaluate(model_args, data_args, accelerator)
    except (OSError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    finally:
        leave_process_group()
    if accelerator.is_main_process:
        print(json.dumps(metrics, indent=2))
        if output_args.output_json:
            write_json_atomically(output_args.output_json, metrics)
            print(f"Metrics written to {output_args.output_json}", file=sys.stderr)
    return 0
