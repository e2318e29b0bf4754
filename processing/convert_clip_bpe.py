"""Converts CLIP's BPE merge list (`bpe_simple_vocab_16e6.txt.gz`) into the `vocab.json` + `merges.txt` that
`transformers.CLIPTokenizer` loads.

The converted files ship in `possam/processing/tokenizer/` so the processor works offline. To regenerate them from
the open-clip-torch wheel (the file is MIT licensed, Copyright (c) 2021 OpenAI):

    pip download --no-deps open-clip-torch==3.3.0 -d /tmp/oc
    unzip -o -j /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl open_clip/bpe_simple_vocab_16e6.txt.gz -d /tmp/oc
    python -m possam.processing.convert_clip_bpe /tmp/oc/bpe_simple_vocab_16e6.txt.gz processing/tokenizer

Facts of the format, as CLIP's tokenizer reads it: the first line is a version header; the next
49152 - 256 - 2 = 48894 lines are the merges in priority order (the rest of the file is unused). Token ids are, in
order: the 256 byte symbols of GPT-2's byte-to-unicode table, the same 256 symbols with the end-of-word suffix
`</w>`, one token per merge (the two parts joined), then `<|startoftext|>` (49406) and `<|endoftext|>` (49407).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os


NUM_MERGES = 49152 - 256 - 2
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"


def byte_symbols() -> list[str]:
    """The printable unicode symbol standing for each byte 0..255 (GPT-2's byte-level BPE alphabet), in byte order.

    Bytes that are printable Latin-1 characters stand for themselves; the others (controls, space, ...) are mapped in
    order onto code points 256, 257, ... so that no symbol is whitespace or a control character.
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), 256))
    symbols, next_free = {}, 256
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(next_free)
            next_free += 1
    # CLIP's id order lists the printable bytes first, then the remapped ones (in byte order).
    return [symbols[b] for b in sorted(printable)] + [symbols[b] for b in range(256) if b not in printable]


def read_merges(bpe_path: str | os.PathLike) -> list[tuple[str, str]]:
    with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(merge) != 2 for merge in merges):
        raise ValueError(f"{bpe_path}: expected a header line then {NUM_MERGES} 'a b' merge lines.")
    return merges


def convert_clip_bpe(bpe_path: str | os.PathLike, output_dir: str | os.PathLike) -> tuple[str, str]:
    """Writes `vocab.json` and `merges.txt` for `CLIPTokenizer` into `output_dir`; returns their paths."""
    merges = read_merges(bpe_path)
    symbols = byte_symbols()
    tokens = symbols + [symbol + END_OF_WORD for symbol in symbols] + ["".join(m) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{bpe_path}: the merges produce duplicate tokens; not a CLIP BPE file.")
    os.makedirs(output_dir, exist_ok=True)
    vocab_path = os.path.join(output_dir, "vocab.json")
    merges_path = os.path.join(output_dir, "merges.txt")
    with open(vocab_path, "w", encoding="utf-8") as handle:
        json.dump(vocab, handle, ensure_ascii=False)
    with open(merges_path, "w", encoding="utf-8") as handle:
        # `tokenizers` skips a first line starting with "#version" as a header.
        handle.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return vocab_path, merges_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bpe_path", help="bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("output_dir", help="folder receiving vocab.json and merges.txt")
    args = parser.parse_args(argv)
    for path in convert_clip_bpe(args.bpe_path, args.output_dir):
        print(path)


if __name__ == "__main__":
    main()
