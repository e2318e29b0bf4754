"""The `possam` command line: `possam <command> [options]`.

Each command lives in its own module exposing `main(argv: list[str], prog: str) -> int`; it is imported only when
invoked, so `possam predict` never loads the training stack.
"""

from __future__ import annotations

import importlib
import sys


# command -> (module implementing it, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("possam.training.demo", "train and evaluate the tiny PosSAM on a generated dataset, no download needed"),
    "convert": ("possam.convert_cli", "convert SAM / CLIP checkpoints and build an untrained PosSAM from them"),
    "train": ("possam.training.train_cli", "train or fine-tune PosSAM on COCO-panoptic-format data"),
    "evaluate": ("possam.training.evaluate_cli", "PQ / mask AP / mIoU of a checkpoint on a panoptic split"),
    "card": ("possam.model_card", "write a saved folder's model card (README.md), with its evaluation results"),
    "prepare-ade20k": ("possam.training.ade20k_cli", "convert ADE20K (semantic + instance PNGs) to COCO panoptic format"),
    "export-onnx": ("possam.export_onnx_cli", "export the image path to ONNX and check it with ONNX Runtime"),
    "predict": ("possam.processing.predict_cli", "segment images with any class names: overlay, panoptic PNG, JSON"),
    "app": ("possam.processing.app", "web demo: upload, type class names, look; click to segment a point (needs .[app])"),
}


def _usage() -> str:
    width = max((len(name) for name in COMMANDS), default=0)
    lines = [f"  {name.ljust(width)}  {description}" for name, (_, description) in sorted(COMMANDS.items())]
    return "usage: possam <command> [options]\n\ncommands:\n" + "\n".join(lines) + "\n\n`possam <command> --help` for a command's options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name = argv[0]
    if name not in COMMANDS:
        print(f"possam: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(argv[1:], prog=f"possam {name}")


if __name__ == "__main__":
    sys.exit(main())
