"""`possam pretrain-clip`: pretrain the toy CLIP of the synthetic open-vocabulary world, write a CLIP-towers folder.

    possam pretrain-clip --out possam-demo/clip --steps 600

The folder has the format `possam convert openclip` writes (`config.json` + `model.safetensors`), so
`PosSamModel.from_pretrained_backbones(sam=..., clip=folder)` and `possam train --clip_checkpoint folder` load it like a
converted OpenCLIP checkpoint; `pretraining.json` records the settings, the contrastive loss and the zero-shot accuracy
on held-out crops and regions of seen and unseen classes. `--steps 0` writes the randomly initialized towers (the
control of the open-vocabulary ablation).
"""

from __future__ import annotations

import argparse
import json
import sys

from .clip_pretraining import ClipPretrainingArguments


def main(argv: list[str], prog: str = "possam pretrain-clip") -> int:
    defaults = ClipPretrainingArguments()
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the CLIP towers to")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps (0: random towers)")
    parser.add_argument("--batch_size", type=int, default=defaults.batch_size, help="scenes per step")
    parser.add_argument("--learning_rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--num_scenes", type=int, default=defaults.num_scenes, help="rendered scenes to draw batches from")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "num_scenes"):
        if getattr(args, name) < (0 if name == "steps" else 1):
            parser.error(f"--{name} must be {'>= 0' if name == 'steps' else '>= 1'}, got {getattr(args, name)}")

    from .clip_pretraining import pretrain_toy_clip

    record = pretrain_toy_clip(
        args.out,
        ClipPretrainingArguments(
            steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
            num_scenes=args.num_scenes, seed=args.seed,
        ),
    )
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
