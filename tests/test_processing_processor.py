"""PosSamProcessor: vocabulary -> prompts -> tokens, images, post-processing with labels, save/load, Auto classes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoProcessor
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from possam.configuration import (
    DEFAULT_PROMPT_TEMPLATES,
    PosSamConfig,
    Vocabulary,
    VocabularyError,
    load_vocabulary,
    possam_preset,
)
from possam.processing import (
    PosSamImageProcessor,
    PosSamProcessor,
    load_clip_tokenizer,
    register_processing_auto_classes,
    resolve_vocabulary,
)
from possam.processing.clip_tokenizer import clean_prompt


@pytest.fixture(scope="module")
def processor():
    return PosSamProcessor(image_processor=PosSamImageProcessor(size=32))


def test_prompts_order_and_index_tensors(processor):
    out = processor(text=["person,child,girl", "cat", "wall-other-merged"])
    templates = list(DEFAULT_PROMPT_TEMPLATES)
    synonyms = ["person", "child", "girl", "cat", "wall-other-merged"]
    prompts, prompt_to_synonym, synonym_to_class = processor.build_prompts(
        resolve_vocabulary(["person,child,girl", "cat", "wall-other-merged"])
    )
    assert prompts == [t.replace("{}", name) for name in synonyms for t in templates]
    assert set(out) == {"input_ids", "attention_mask", "prompt_to_synonym", "synonym_to_class"}
    assert out["prompt_to_synonym"].tolist() == [s for s in range(5) for _ in templates] == prompt_to_synonym
    assert out["synonym_to_class"].tolist() == [0, 0, 0, 1, 2] == synonym_to_class
    assert out["input_ids"].dtype == torch.int64 and out["attention_mask"].dtype == torch.int64
    # Padded to the longest prompt, not to 77, with the same ids as the tokenizer alone.
    tokenizer = load_clip_tokenizer()
    lengths = [len(tokenizer(clean_prompt(p))["input_ids"]) for p in prompts]
    assert out["input_ids"].shape == (70, max(lengths)) and max(lengths) < 77
    assert out["attention_mask"].sum(1).tolist() == lengths
    for row, prompt in enumerate(prompts):
        assert out["input_ids"][row, : lengths[row]].tolist() == tokenizer(prompt)["input_ids"]
        assert (out["input_ids"][row, lengths[row] :] == tokenizer.pad_token_id).all()


def test_images_and_text_together(processor):
    images = [np.zeros((20, 10, 3), np.uint8), np.zeros((8, 16, 3), np.uint8)]
    out = processor(images=images, text=["cat", "grass"], stuff_labels=["grass"])
    assert out["pixel_values"].shape == (2, 3, 32, 32)
    assert out["reshaped_input_sizes"].tolist() == [[32, 16], [16, 32]]
    assert out["synonym_to_class"].tolist() == [0, 1]
    assert set(processor(images=images[0])) == {"pixel_values", "pixel_mask", "original_sizes", "reshaped_input_sizes"}
    annotated = processor(images=images[:1], annotations=[{"semantic_map": np.ones((20, 10), np.int64)}])
    assert annotated["class_labels"][0].tolist() == [1]
    assert annotated["mask_labels"][0].shape == (1, 32, 32)
    as_numpy = processor(images=images[0], text=["cat"], return_tensors="np")
    assert isinstance(as_numpy["pixel_values"], np.ndarray) and isinstance(as_numpy["input_ids"], np.ndarray)


def test_vocabulary_forms(processor, tmp_path):
    shipped = resolve_vocabulary(load_vocabulary("coco_panoptic"))
    assert len(shipped) == 133 and len(shipped.stuff_label_ids) == 53
    path = tmp_path / "vocab.txt"
    path.write_text("5:cat,kitty:thing\n9:grass:stuff\n")
    from_file = resolve_vocabulary(path)  # a pathlib.Path is a vocabulary file
    assert from_file.labels == ["cat", "grass"] and from_file.stuff_label_ids == [1]
    assert resolve_vocabulary(from_file) is from_file
    # The same two classes in every user form: list entries with '|' (or the older ',') for synonyms, or one
    # comma-separated string of classes as in transformers' zero-shot pipelines; stuff labels as a list or a string.
    for labels, stuff in [
        (["cat|kitty", "grass"], ["grass"]),
        (["cat,kitty", "grass"], "grass"),
        ("cat|kitty,grass", "grass"),
        (" cat | kitty , grass ", ["grass"]),
    ]:
        from_labels = resolve_vocabulary(labels, stuff_labels=stuff)
        assert from_labels.class_names == from_file.class_names and from_labels.is_thing == from_file.is_thing
    assert resolve_vocabulary("ball,box").class_names == [["ball"], ["box"]]
    assert resolve_vocabulary("sky").class_names == [["sky"]]
    tokens_file, tokens_string = processor(text=path), processor(text="cat|kitty,grass")
    assert all(torch.equal(tokens_file[k], tokens_string[k]) for k in tokens_file)


@pytest.mark.parametrize(
    "text, stuff, error, message",
    [
        ([], None, VocabularyError, "empty"),
        (["cat", "dog", "cat"], None, VocabularyError, r"Duplicate labels in candidate_labels: \['cat'\]"),
        (["cat", "dog"], ["grass"], VocabularyError, "Stuff label 'grass' is not one of the candidate labels"),
        (["cat", "dog,"], None, VocabularyError, "empty class name"),
        ("coco_panoptic", None, VocabularyError, r"names a shipped vocabulary.*load_vocabulary\('coco_panoptic'\)"),
        ("cat,,dog", None, VocabularyError, "empty class name in item 2"),
        (["person|child,kid"], None, VocabularyError, r"mixes ',' and '\|'"),
        (["cat", "dog"], "cat,sky", VocabularyError, "Stuff label 'sky' is not one of"),
        (["cat", 3], None, VocabularyError, "must be a string"),
        ({"cat": 1}, None, TypeError, "text must be a list of class names"),
        (Path("vocab.txt"), ["person"], ValueError, "stuff_labels can only be given with class names"),
    ],
)
def test_bad_vocabularies(processor, text, stuff, error, message):
    with pytest.raises(error, match=message):
        processor(text=text, stuff_labels=stuff)


def test_other_errors(processor):
    with pytest.raises(ValueError, match="Give images, text"):
        processor()
    with pytest.raises(ValueError, match="cannot read image file '/missing.jpg'"):
        processor(images="/missing.jpg", text=["cat"])
    with pytest.raises(ValueError, match="without the vocabulary"):
        processor(images=np.zeros((4, 4, 3), np.uint8), stuff_labels=["cat"])
    with pytest.raises(ValueError, match="exceed CLIP's 77 tokens.*class 'very"):
        processor(text=["very " * 80 + "long name"])
    with pytest.raises(ValueError, match="exactly one"):
        PosSamProcessor(prompt_templates=["no placeholder"])


def test_vocabulary_tokenized_once(processor, monkeypatch):
    calls = []
    original = PosSamProcessor._tokenize

    def counting(self, vocabulary):
        calls.append(len(vocabulary))
        return original(self, vocabulary)

    monkeypatch.setattr(PosSamProcessor, "_tokenize", counting)
    fresh = PosSamProcessor(image_processor=PosSamImageProcessor(size=32))
    first = fresh(text=load_vocabulary("ade20k_150"))
    first["input_ids"][0, 0] = -1  # the caller owns its tensors: this must not reach the cache
    second = fresh(text=load_vocabulary("ade20k_150"))
    assert calls == [150]
    assert second["input_ids"][0, 0] == 49406
    fresh(text=["cat"])
    assert calls == [150, 1]


def test_custom_templates_and_save_load_round_trip(tmp_path):
    processor = PosSamProcessor(image_processor=PosSamImageProcessor(size=64), prompt_templates=["a {}", "{} photo"])
    processor.save_pretrained(tmp_path)
    loaded = PosSamProcessor.from_pretrained(tmp_path)
    assert loaded.prompt_templates == ["a {}", "{} photo"]
    assert isinstance(loaded.image_processor, PosSamImageProcessor) and loaded.image_processor.size == {
        "longest_edge": 64
    }
    assert type(loaded.tokenizer).__name__ == "CLIPTokenizer"
    image = np.random.default_rng(0).integers(0, 256, (10, 30, 3), dtype=np.uint8)
    before, after = processor(images=image, text=["cat,kitty"]), loaded(images=image, text=["cat,kitty"])
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert before["input_ids"].shape[0] == 4


def test_auto_classes_after_registration(tmp_path):
    register_processing_auto_classes()
    register_processing_auto_classes()  # idempotent
    if "possam" not in CONFIG_MAPPING:
        # The package root registers the config on `import possam`; this test only needs the mapping.
        AutoConfig.register("possam", PosSamConfig)
    possam_preset("tiny").save_pretrained(tmp_path)
    PosSamProcessor(image_processor=PosSamImageProcessor(size=128)).save_pretrained(tmp_path)
    image_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(image_processor) is PosSamImageProcessor and image_processor.size == {"longest_edge": 128}
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(processor) is PosSamProcessor and processor.prompt_templates == list(DEFAULT_PROMPT_TEMPLATES)


def test_post_processing_names_segments_and_fuses_vocabulary_stuff(processor):
    probabilities = torch.tensor([[0.0, 0.9, 0.0], [0.0, 0.8, 0.0], [0.7, 0.0, 0.0]])
    logits = torch.full((3, 8, 8), -6.0)
    logits[0, :3], logits[1, 3:5], logits[2, 5:] = 6.0, 6.0, 6.0
    outputs = {"class_probabilities": probabilities[None], "mask_scores": torch.ones(1, 3), "masks_queries_logits": logits[None]}
    vocabulary = ["cat", "grass,lawn"]
    panoptic = processor.post_process_panoptic_segmentation(
        outputs, vocabulary, stuff_labels=["grass"], target_sizes=[(32, 32)]
    )[0]
    assert [(s["label"], s["label_id"], s["was_fused"]) for s in panoptic["segments_info"]] == [
        ("grass", 1, True),
        ("cat", 0, False),
    ]
    things = processor.post_process_panoptic_segmentation(outputs, vocabulary, target_sizes=[(32, 32)])[0]
    assert [s["label"] for s in things["segments_info"]] == ["grass", "grass", "cat"]
    instances = processor.post_process_instance_segmentation(
        outputs, vocabulary, stuff_labels=["grass"], target_sizes=[(32, 32)]
    )[0]
    assert [s["label"] for s in instances["segments_info"]] == ["cat"]
    semantic = processor.post_process_semantic_segmentation(
        outputs, Vocabulary.from_labels(vocabulary), target_sizes=[(32, 32)]
    )[0]
    assert semantic.shape == (32, 32) and (semantic[:18] == 1).all() and (semantic[22:] == 0).all()
    with pytest.raises(ValueError, match="2 classes but the vocabulary has 3"):
        processor.post_process_panoptic_segmentation(outputs, ["a", "b", "c"])
