"""The shipped CLIP tokenizer against OpenCLIP's own tokenizer (the reference that FC-CLIP's text encoder used).

Needs `pip install --no-deps open-clip-torch==3.3.0 ftfy regex wcwidth`. OpenCLIP's package imports torchvision,
which cannot be installed here, so its `tokenizer.py` (which needs only ftfy, regex, numpy and torch) is loaded
directly from the installed file.
"""

import filecmp
import importlib.util
from importlib import resources

import pytest

from possam.configuration import DEFAULT_PROMPT_TEMPLATES
from possam.processing import load_clip_tokenizer
from possam.processing.clip_tokenizer import clean_prompt
from possam.processing.convert_clip_bpe import NUM_MERGES, byte_symbols, convert_clip_bpe


CLASS_NAMES = [
    "person",
    "wall-other-merged",
    "traffic light",
    "Fire Hydrant",
    "café",
    "crème brûlée",
    "tv,tvmonitor",
    "dining table",
    "potted plant (indoor)",
    "hair drier",
    "T-shirt",
    "O'Neill's pub",
    "rock & roll",
    "fish &amp; chips",
    "don’t-walk sign",
    "ﬁg tree",
    "ＡＢＣ blocks",
    "3D printer",
    "pool  table",
    "naïve Zoë",
    "東京 tower",
    "emoji 🙂 face",
    "   spaced   out   ",
    "x-ray/scanner!!",
]


def _open_clip_tokenizer_module():
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        raise ImportError("open_clip is required: pip install --no-deps open-clip-torch==3.3.0 ftfy regex wcwidth")
    path = spec.submodule_search_locations[0] + "/tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("_open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    return _open_clip_tokenizer_module()


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


def test_shipped_tokenizer_loads_offline(tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = load_clip_tokenizer()
    assert type(offline).__name__ == "CLIPTokenizer"
    assert len(offline) == 49408
    assert offline.bos_token_id == 49406 and offline.eos_token_id == 49407 and offline.pad_token_id == 49407
    assert offline.model_max_length == 77
    assert offline("a photo of a cat.")["input_ids"] == tokenizer("a photo of a cat.")["input_ids"]


def test_byte_symbols_match_open_clip(open_clip_tokenizer):
    assert byte_symbols() == list(open_clip_tokenizer.bytes_to_unicode().values())


def test_conversion_reproduces_shipped_files(open_clip_tokenizer, tmp_path):
    bpe_path = open_clip_tokenizer.default_bpe()
    vocab_path, merges_path = convert_clip_bpe(bpe_path, tmp_path)
    shipped = resources.files("possam.processing").joinpath("tokenizer")
    assert filecmp.cmp(vocab_path, shipped.joinpath("vocab.json"), shallow=False)
    assert filecmp.cmp(merges_path, shipped.joinpath("merges.txt"), shallow=False)
    with open(merges_path, encoding="utf-8") as handle:
        assert len(handle.read().splitlines()) == NUM_MERGES + 1


def test_vocabulary_equals_open_clip_encoder(open_clip_tokenizer, tokenizer):
    reference = open_clip_tokenizer.SimpleTokenizer()
    ours = tokenizer.get_vocab()
    # OpenCLIP names its two special tokens differently; their ids (49406, 49407) are what matters.
    expected = {token: index for token, index in reference.encoder.items() if index < 49406}
    expected.update({"<|startoftext|>": reference.sot_token_id, "<|endoftext|>": reference.eot_token_id})
    assert ours == expected


def test_prompt_ids_equal_open_clip(open_clip_tokenizer, tokenizer):
    prompts = [template.replace("{}", name) for name in CLASS_NAMES for template in DEFAULT_PROMPT_TEMPLATES]
    reference = open_clip_tokenizer.tokenize(prompts)
    ours = tokenizer([clean_prompt(p) for p in prompts], padding="longest", return_tensors="pt")
    assert ours["input_ids"].shape[1] < 77
    for row, prompt in enumerate(prompts):
        length = int(ours["attention_mask"][row].sum())
        expected = reference[row][reference[row] != 0].tolist()
        assert ours["input_ids"][row, :length].tolist() == expected, prompt


def test_clean_prompt_needed_for_html_and_quotes(tokenizer, open_clip_tokenizer):
    # Without the cleaning, CLIPTokenizer tokenizes HTML entities and curly quotes differently from OpenCLIP.
    text = "a photo of a fish &amp; chips don’t"
    reference = open_clip_tokenizer.tokenize([text])[0]
    reference = reference[reference != 0].tolist()
    assert tokenizer(text)["input_ids"] != reference
    assert tokenizer(clean_prompt(text))["input_ids"] == reference
