"""`possam train`: fine-tune or train PosSAM on COCO-panoptic-format data.

    possam train --config recipe.json --output_dir runs/coco --max_steps 1000

Every field of `ModelArguments`, `DataArguments` and `PosSamTrainingArguments` is a flag; `--config` reads them from
a JSON or YAML file first. Runs as is on one device, and under `torchrun` or `accelerate launch` on several.
"""

from __future__ import annotations

import json
import sys

from .arguments import DataArguments, ModelArguments, parse_arguments
from .trainer import PosSamTrainingArguments


def main(argv: list[str], prog: str = "possam train") -> int:
    model_args, data_args, training_args = parse_arguments(argv, (ModelArguments, DataArguments, PosSamTrainingArguments), prog)
    from ..processing.output_files import OutputFolder
    from .run import leave_process_group, train

    try:
        # Checked writable before the model runs; removed again if the run fails before writing anything into it.
        with OutputFolder(training_args.output_dir):
            metrics = train(model_args, data_args, training_args)
    except (OSError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    finally:
        leave_process_group()
    if training_args.process_index == 0:
        print(json.dumps(metrics, indent=2))
        print(f"Model, processor and checkpoints saved in {training_args.output_dir}", file=sys.stderr)
    return 0
