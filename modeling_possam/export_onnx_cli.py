"""`possam export-onnx`: write PosSAM's image path as an ONNX file and check it against PyTorch with ONNX Runtime.

    possam export-onnx path/to/possam --out possam.onnx
    possam export-onnx path/to/possam --out possam.onnx --labels "cat,person|child,grass"   # + the text embeddings

The graph and its inputs and outputs are described in `possam.onnx_export`. After writing the file the command runs
the model in PyTorch and the file in ONNX Runtime on the same random batch (2 images, the model's default vocabulary
or the one given) and prints each output's largest absolute difference; it exits with status 1 when one exceeds
`--atol`. With `--labels` or `--vocab` it also writes that vocabulary's text embeddings (`PosSamTextEmbeddings`,
safetensors) next to the ONNX file, ready to feed to ONNX Runtime. Exit status 2 for bad usage, 1 when the model cannot
be read, the export fails or the check does not pass.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Export PosSAM's image path (towers, decoder, heads) to ONNX and check it."
    )
    parser.add_argument("model", help="a PosSAM checkpoint folder (model + processor) or Hub id")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    vocabulary = parser.add_mutually_exclusive_group()
    vocabulary.add_argument(
        "--labels", help='also save these classes\' text embeddings, e.g. "cat,person|child,grass" (| = synonyms)'
    )
    vocabulary.add_argument("--vocab", help="also save a shipped vocabulary's or a vocabulary file's text embeddings")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version (default 18)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest accepted |ONNX Runtime - PyTorch| (1e-4)")
    parser.add_argument("--no_check", action="store_true", help="skip the ONNX Runtime comparison")
    return parser


def _text_inputs(model, processor, vocabulary):
    """The check's (and the saved file's) text embeddings: the given vocabulary, else the model's default one."""
    from .configuration import Vocabulary

    if vocabulary is None and model.text_classifier.has_default_vocabulary:
        return model.text_classifier.default_text_embeddings()
    if vocabulary is None:
        vocabulary = Vocabulary.from_entries(model.config.vocabulary, model.config.vocabulary_is_thing)
    return model.get_text_embeddings(**processor.encode_vocabulary(vocabulary))


def check_onnx(model, path: str, text, batch_size: int = 2, seed: int = 0) -> dict[str, float]:
    """Largest |ONNX Runtime - PyTorch| per output on a random batch with the vocabulary `text`."""
    import onnxruntime

    from .onnx_export import OUTPUT_NAMES

    size = model.config.image_size
    pixel_values = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(
            pixel_values=pixel_values.to(model.dtype),
            synonym_embeddings=text.synonym_embeddings,
            synonym_to_class=text.synonym_to_class,
        )
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {
        "pixel_values": pixel_values.numpy(),
        "synonym_embeddings": text.synonym_embeddings.float().cpu().numpy(),
        "synonym_to_class": text.synonym_to_class.cpu().numpy().astype(np.int64),
    }
    got = session.run(list(OUTPUT_NAMES), feeds)
    return {
        name: float(np.abs(value - expected[name].float().cpu().numpy()).max()) for name, value in zip(OUTPUT_NAMES, got)
    }


def main(argv: list[str], prog: str = "possam export-onnx") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    from .configuration import Vocabulary, VocabularyError, load_vocabulary
    from . import PosSamModel, PosSamProcessor
    from .onnx_export import export_onnx

    vocabulary = None
    try:
        if args.labels is not None:
            vocabulary = Vocabulary.from_labels(args.labels)
        elif args.vocab is not None:
            vocabulary = load_vocabulary(args.vocab)
    except VocabularyError as error:
        parser.error(str(error))
    try:
        model = PosSamModel.from_pretrained(args.model).eval()
        processor = PosSamProcessor.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        print(f"error: cannot load the PosSAM model {args.model!r}: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        export_onnx(model, out, opset_version=args.opset)
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {out} ({os.path.getsize(out) / 2**20:.1f} MiB).")
    text = _text_inputs(model, processor, vocabulary)
    if vocabulary is not None:
        text_path = out.with_suffix(".text.safetensors")
        text.save(str(text_path))
        print(f"Wrote {text_path} ({len(vocabulary)} classes: {', '.join(vocabulary.labels[:5])}"
              f"{', ...' if len(vocabulary) > 5 else ''}).")
    if args.no_check:
        return 0
    differences = check_onnx(model, str(out), text)
    for name, difference in differences.items():
        print(f"max |onnxruntime - pytorch| {name}: {difference:.2e}")
    worst = max(differences.values())
    if not worst <= args.atol:
        print(f"error: ONNX Runtime differs from PyTorch by {worst:.2e} > --atol {args.atol:g}.", file=sys.stderr)
        return 1
    print(f"ONNX Runtime matches PyTorch within {args.atol:g}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
