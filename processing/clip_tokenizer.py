"""The CLIP tokenizer that ships with PosSAM, and the text cleaning that makes it match OpenCLIP's.

`tokenizer/` holds CLIP's BPE vocabulary converted for `transformers.CLIPTokenizer` (see `convert_clip_bpe.py`, MIT
license in `tokenizer/LICENSE`), so prompts can be tokenized with no network access. CLIPTokenizer reproduces
OpenCLIP's token ids except for OpenCLIP's text cleaning (ftfy + HTML unescaping), which `clean_prompt` applies.
"""

from __future__ import annotations

import html
import unicodedata
from importlib import resources

from transformers import CLIPTokenizer


# CLIP's text towers have 77 positions.
CLIP_CONTEXT_LENGTH = 77

# ftfy's defaults that OpenCLIP relies on and that matter for class names: typographic quotes straightened
# (`uncurl_quotes`), Latin ligatures split (`fix_latin_ligatures`), full-width ASCII made half-width
# (`fix_character_width`).
_CHARACTER_FIXES = str.maketrans(
    {
        **{chr(c): "'" for c in (0x02BC, *range(0x2018, 0x201C))},
        **{chr(c): '"' for c in range(0x201C, 0x2020)},
        **{chr(c): unicodedata.normalize("NFKC", chr(c)) for c in range(0xFB00, 0xFB07)},
        **{chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)},
        "\u3000": " ",
    }
)


def load_clip_tokenizer() -> CLIPTokenizer:
    """The CLIP BPE tokenizer (49,408 tokens, context 77) from the files shipped in `possam/processing/tokenizer`."""
    with resources.as_file(resources.files(__package__).joinpath("tokenizer")) as folder:
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def clean_prompt(text: str) -> str:
    """OpenCLIP's cleaning of a text before BPE: HTML entities unescaped (twice, as OpenCLIP does), quotes,
    ligatures and full-width characters fixed as ftfy does. Whitespace collapsing, NFC and lower-casing are done by
    CLIPTokenizer itself; ftfy's repair of mis-decoded (mojibake) text is not reproduced."""
    return html.unescape(html.unescape(text)).translate(_CHARACTER_FIXES).strip()
