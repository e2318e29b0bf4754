"""PosSamConfig: presets, save/load, validation errors, vocabularies."""

from __future__ import annotations

import json

import pytest
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig

import possam  # noqa: F401  (registers the Auto classes)
from possam import PosSamConfig, PosSamModel, Vocabulary, VocabularyError, load_vocabulary, possam_preset


@pytest.mark.parametrize(
    "name,sam_hidden,sam_layers", [("base", 768, 12), ("large", 1024, 24), ("huge", 1280, 32), ("tiny", 32, 2)]
)
def test_presets(name, sam_hidden, sam_layers):
    config = possam_preset(name)
    assert config.sam_vision_config.hidden_size == sam_hidden
    assert config.sam_vision_config.num_hidden_layers == sam_layers
    if name != "tiny":
        assert config.image_size == 1024 and config.num_queries == 250 and config.decoder_layers == 10
        assert config.clip_config.vision_config.hidden_sizes == [192, 384, 768, 1536]
        assert config.clip_config.text_config.num_hidden_layers == 16
        assert config.ldp_hidden_size == 768


def test_save_load_round_trip(tmp_path):
    config = possam_preset("tiny", ldp_fusion="concat_mlp", ensemble_mode="ldp_only", vocabulary=["cat,kitty", "grass"],
                           vocabulary_is_thing=[True, False])
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, PosSamConfig)
    assert {**loaded.to_dict(), "_name_or_path": ""} == {**config.to_dict(), "_name_or_path": ""}
    assert loaded.id2label == {0: "cat", 1: "grass"}


def test_vit_clip_tower_config():
    config = possam_preset("tiny", clip_config={"vision_config": {"model_type": "clip_vision_model", "hidden_size": 32,
                                                                  "intermediate_size": 64, "num_hidden_layers": 1,
                                                                  "num_attention_heads": 2, "projection_dim": 32}})
    assert config.clip_config.vision_config.model_type == "clip_vision_model"
    assert config.clip_config.dense_feature_dim == 32


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"ldp_hidden_size": 16}, r"ldp_hidden_size \(16\) must equal the CLIP embedding dim clip_config.projection_dim \(32\)"),
        ({"feature_size": 48}, "must be multiples of 32"),
        ({"ensemble_mode": "geometric"}, "needs training_vocabulary"),
        ({"ensemble_alpha": 1.5}, r"ensemble_alpha must be in \[0, 1\]"),
        ({"prompt_templates": ["a photo"]}, "must contain '{}' exactly once"),
        ({"vocabulary": ["cat", "dog"], "vocabulary_is_thing": [True]}, "vocabulary_is_thing has 1 entries"),
        ({"clip_config": {"projection_dim": 64}}, r"text_config.projection_dim \(.*\) must equal clip_config.projection_dim \(64\)"),
        ({"sam_vision_config": {"patch_size": 8}}, "patch_size must be 16"),
    ],
)
def test_inconsistent_values_are_clear_errors(overrides, message):
    with pytest.raises(Exception, match=message):
        possam_preset("tiny", **overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown PosSAM preset 'xl'"):
        possam_preset("xl")


def test_default_vocabulary_is_coco_panoptic():
    config = PosSamConfig()
    assert len(config.vocabulary) == 133 and sum(config.vocabulary_is_thing) == 80
    assert config.vocabulary[0].startswith("person,child") and config.id2label[0] == "person"


@pytest.mark.parametrize("name,classes,things", [("coco_panoptic", 133, 80), ("ade20k_150", 150, 100), ("ade20k_847", 847, 847)])
def test_shipped_vocabularies(name, classes, things):
    vocabulary = load_vocabulary(name)
    assert len(vocabulary) == classes and sum(vocabulary.is_thing) == things
    assert Vocabulary.from_text(vocabulary.to_text()) == vocabulary


def test_vocabulary_file_errors_name_the_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("# comment\n1:cat,kitty:thing\n2 dog\n")
    with pytest.raises(VocabularyError, match=r"vocab.txt, line 3: expected 'id:name1,name2'"):
        Vocabulary.from_file(path)
    path.write_text("1:cat:animal\n")
    with pytest.raises(VocabularyError, match="line 1: the flag must be 'thing' or 'stuff'"):
        Vocabulary.from_file(path)
    path.write_text("1:cat,,kitty\n")
    with pytest.raises(VocabularyError, match="empty class name"):
        Vocabulary.from_file(path)
    with pytest.raises(VocabularyError, match="neither a shipped vocabulary"):
        load_vocabulary(tmp_path / "missing.txt")


def test_vocabulary_file_encodings_and_duplicates_name_the_file_and_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("\ufeff1:cat,kitty:thing\n2:sky:stuff\n".encode("utf-8"))  # UTF-8 with a byte-order mark
    vocabulary = Vocabulary.from_file(path)
    assert vocabulary.dataset_ids == [1, 2] and vocabulary.labels == ["cat", "sky"]
    path.write_bytes("1:cat\n2:sky\n".encode("utf-16"))
    with pytest.raises(VocabularyError, match=rf"^{path}: the file is UTF-16 encoded; save it as UTF-8\.$"):
        Vocabulary.from_file(path)
    path.write_bytes("1:cat\n2:caf\xe9\n".encode("latin-1"))
    with pytest.raises(VocabularyError, match=rf"^{path}, line 2: not UTF-8 text \(byte 0xe9\)"):
        Vocabulary.from_file(path)
    path.write_text("# ids\n1:cat\n2:dog\n1:bird\n")
    with pytest.raises(VocabularyError, match=rf"^{path}, line 4: id 1 was already given on line 2\.$"):
        Vocabulary.from_file(path)
    path.write_text("1:cat,kitty\n2:dog\n3:cat,kitty:thing\n")
    with pytest.raises(VocabularyError, match=rf"^{path}, line 3: class 'cat,kitty' was already given on line 1\.$"):
        Vocabulary.from_file(path)


def test_a_name_given_to_two_classes_is_refused():
    with pytest.raises(VocabularyError, match=r"The name 'sky' is given to two classes, 1 \('ball'\) and 2 \('sky'\)"):
        Vocabulary.from_labels(["ball,sky", "sky"])
    with pytest.raises(VocabularyError, match=r"The name 'kitty' is given to two classes, 1 \('cat'\) and 3"):
        Vocabulary.from_labels(["cat,kitty", "dog", "lion,kitty"])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("ensemble_mode", "foo", "ensemble_mode must be one of ('mase', 'geometric', 'ldp_only', 'clip_only'), got 'foo'."),
        ("ldp_fusion", "add", "ldp_fusion must be one of ('self_attention', 'sum', 'concat_mlp', 'none'), got 'add'."),
        ("num_queries", 0, "num_queries must be a positive integer, got 0."),
        ("num_queries", "8", "num_queries must be a positive integer, got '8'."),
        ("mask_weight", -1.0, "mask_weight must be a number >= 0, got -1.0."),
        ("mase_void_threshold", 1.5, "mase_void_threshold must be in [0, 1], got 1.5."),
        ("use_auxiliary_loss", "yes", "use_auxiliary_loss must be true or false, got 'yes'."),
    ],
)
def test_invalid_config_values_fail_when_loaded_naming_the_file(tmp_path, field, value, message):
    possam_preset("tiny").save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    values[field] = value
    (tmp_path / "config.json").write_text(json.dumps(values))
    with pytest.raises(StrictDataclassError) as raised:  # huggingface_hub's wrapper of the validator's ValueError
        PosSamConfig.from_pretrained(tmp_path)
    assert message in str(raised.value)
    # Through the model loader: one line naming config.json, before any weight is read.
    from possam.loading import ModelLoadError

    with pytest.raises(ModelLoadError) as raised:
        PosSamModel.from_pretrained(tmp_path)
    assert str(raised.value) == f"{tmp_path / 'config.json'}: invalid config: {message}"


def test_vocabulary_from_labels():
    vocabulary = Vocabulary.from_labels(["cat,kitty", "grass", "sky"], stuff_labels=["grass", "sky"])
    assert vocabulary.labels == ["cat", "grass", "sky"] and vocabulary.stuff_label_ids == [1, 2]
    assert vocabulary.class_names[0] == ["cat", "kitty"]
    with pytest.raises(VocabularyError, match="candidate_labels is empty"):
        Vocabulary.from_labels([])
    with pytest.raises(VocabularyError, match=r"Duplicate labels in candidate_labels: \['cat'\]"):
        Vocabulary.from_labels(["cat", "cat,kitty"])
    with pytest.raises(VocabularyError, match=r"Duplicate classes in the vocabulary: \['cat,kitty'\]"):
        Vocabulary.from_entries(["cat,kitty", "cat,kitty"])
    with pytest.raises(VocabularyError, match="Stuff label 'road' is not one of the candidate labels"):
        Vocabulary.from_labels(["cat"], stuff_labels=["road"])
    # One string is a comma-separated list of classes (transformers' zero-shot convention), '|' separates synonyms.
    from_string = Vocabulary.from_labels("cat|kitty, grass,sky", stuff_labels="grass,sky")
    assert from_string == vocabulary
    assert Vocabulary.from_labels(["cat|kitty", "grass", "sky"], stuff_labels=["grass", "sky"]) == vocabulary
    assert Vocabulary.from_labels("sky", stuff_labels="sky").class_names == [["sky"]]
    with pytest.raises(VocabularyError, match="must be a list of class names or a comma-separated string"):
        Vocabulary.from_labels(3)
    with pytest.raises(VocabularyError, match=r"candidate_labels\[0\]: 'cat\|kitty,tabby' mixes"):
        Vocabulary.from_labels(["cat|kitty,tabby"])
