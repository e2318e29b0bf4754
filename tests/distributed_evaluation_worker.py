"""Worker of test_training_evaluation_loop.py's distributed test: evaluates the tiny PosSAM with PosSamTrainer under
torchrun (gloo on CPU) and writes rank 0's metrics to `<output_dir>/metrics.json`.

    torchrun --nproc_per_node=2 distributed_evaluation_worker.py VAL_JSON VAL_IMAGES OUTPUT_DIR EVAL_BATCH_SIZE
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from conftest import tiny_model, tiny_processor  # noqa: E402

from possam.training import (  # noqa: E402
    PanopticEvaluationDataset,
    PosSamDataCollator,
    PosSamTrainer,
    PosSamTrainingArguments,
    load_coco_panoptic,
)
from possam.training.run import leave_process_group  # noqa: E402


def main(json_path: str, image_dir: str, output_dir: str, batch_size: str) -> None:
    val, vocabulary = load_coco_panoptic(json_path, image_dir)
    processor = tiny_processor()
    trainer = PosSamTrainer(
        model=tiny_model(),
        args=PosSamTrainingArguments(
            output_dir=output_dir, per_device_eval_batch_size=int(batch_size), report_to="none", use_cpu=True,
            ddp_backend="gloo", disable_tqdm=True,
        ),
        eval_dataset=PanopticEvaluationDataset(val, processor.image_processor),
        data_collator=PosSamDataCollator(processor.encode_vocabulary(vocabulary)),
        processing_class=processor,
        eval_vocabulary=vocabulary,
        seen_classes=vocabulary.entries[:2],
    )
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
            json.dump({"world_size": trainer.args.world_size, **metrics}, handle)
    leave_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
