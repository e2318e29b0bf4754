"""The open-vocabulary world: its seen/unseen split, and that training data never carries an unseen label."""

import json

import numpy as np
import pytest
from PIL import Image

from possam.configuration import load_vocabulary
from possam.processing import PosSamImageProcessor
from possam.processing.panoptic_png import rgb_to_segment_ids
from possam.training import PanopticTrainingDataset
from possam.training.coco_panoptic import load_coco_panoptic
from possam.training.open_vocabulary_world import (
    SEEN_CLASSES,
    UNSEEN_CLASSES,
    WORLD_CLASSES,
    generate_world_split,
    world_vocabularies,
)
from possam.training.synthetic import SYNTHETIC_CLASSES, synthetic_vocabulary


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    # Same seed: the same scenes, labelled two ways.
    return generate_world_split(root / "seen", 10, "seen", image_size=64, seed=4), generate_world_split(
        root / "all", 10, "all", image_size=64, seed=4
    )


def test_shipped_split_is_the_worlds_classes_with_their_ids():
    seen, unseen = world_vocabularies()
    world = synthetic_vocabulary(WORLD_CLASSES)
    assert len(world) == 18 and sum(world.is_thing) == 12
    assert seen.labels == list(SEEN_CLASSES) and unseen.labels == list(UNSEEN_CLASSES)
    assert set(seen.dataset_ids) | set(unseen.dataset_ids) == set(world.dataset_ids)
    assert not set(seen.dataset_ids) & set(unseen.dataset_ids)
    for vocabulary in (seen, unseen):
        for names, thing, dataset_id in zip(vocabulary.class_names, vocabulary.is_thing, vocabulary.dataset_ids):
            index = world.dataset_ids.index(dataset_id)
            assert (names, thing) == (world.class_names[index], world.is_thing[index])
    assert load_vocabulary("synthetic_unseen") == unseen
    # ~1/3 unseen, things and stuff among them; several classes have synonyms.
    assert len(unseen) == 6 and sum(unseen.is_thing) == 4
    assert sum(len(names) > 1 for names in world.class_names) >= 8


def test_unseen_classes_share_their_attributes_with_seen_ones():
    # Names must come from CLIP, not from an attribute no seen class has; identity is never a unique colour alone.
    seen = [SYNTHETIC_CLASSES[name] for name in SEEN_CLASSES]
    for name in UNSEEN_CLASSES:
        cls = SYNTHETIC_CLASSES[name]
        if cls.isthing:
            assert cls.shape in {other.shape for other in seen if other.isthing}, name
            assert cls.pattern in {other.pattern for other in seen if other.isthing}, name
    things = [SYNTHETIC_CLASSES[name] for name in WORLD_CLASSES if SYNTHETIC_CLASSES[name].isthing]
    for attribute in ("shape", "pattern"):
        values = [getattr(cls, attribute) for cls in things]
        assert all(values.count(value) >= 2 for value in values), attribute


def test_training_split_never_labels_unseen_classes(splits):
    seen_split, all_split = splits
    seen_data = json.loads(open(seen_split.json_path).read())
    all_data = json.loads(open(all_split.json_path).read())
    assert [c["name"] for c in seen_data["categories"]] == list(SEEN_CLASSES)
    assert [c["name"] for c in all_data["categories"]] == list(WORLD_CLASSES)
    unseen_ids = {c["id"] for c in all_data["categories"] if c["name"] in UNSEEN_CLASSES}
    assert seen_split.vocabulary == load_vocabulary("synthetic_seen")

    unseen_pixels = 0
    for seen_annotation, all_annotation in zip(seen_data["annotations"], all_data["annotations"]):
        assert not {s["category_id"] for s in seen_annotation["segments_info"]} & unseen_ids
        name = seen_annotation["file_name"]
        assert np.array_equal(
            np.asarray(Image.open(f"{seen_split.image_dir}/{name}")), np.asarray(Image.open(f"{all_split.image_dir}/{name}"))
        )
        seen_ids = rgb_to_segment_ids(np.asarray(Image.open(f"{seen_split.panoptic_dir}/{name}")))
        all_ids = rgb_to_segment_ids(np.asarray(Image.open(f"{all_split.panoptic_dir}/{name}")))
        for segment in all_annotation["segments_info"]:
            mask = all_ids == segment["id"]
            if segment["category_id"] in unseen_ids:
                assert (seen_ids[mask] == 0).all()  # drawn, but void in the training labels
                unseen_pixels += int(mask.sum())
            else:
                assert (seen_ids[mask] == segment["id"]).all()
    assert unseen_pixels > 0  # unseen classes do appear in the training scenes

    # The training targets the model sees: class indices into the 12 seen classes only, unseen pixels ignored.
    dataset, vocabulary = load_coco_panoptic(seen_split.json_path, seen_split.image_dir, synonyms_from=seen_split.vocabulary_path)
    assert vocabulary.labels == list(SEEN_CLASSES)
    processor = PosSamImageProcessor(size={"longest_edge": 64})
    training = PanopticTrainingDataset(dataset, processor, augment=False)
    for index in range(len(training)):
        example = training[index]
        assert example["class_labels"].numel() and int(example["class_labels"].max()) < len(SEEN_CLASSES)
        name = all_data["annotations"][index]["file_name"]
        all_ids = rgb_to_segment_ids(np.asarray(Image.open(f"{all_split.panoptic_dir}/{name}")))
        unseen_mask = np.isin(all_ids, [s["id"] for s in all_data["annotations"][index]["segments_info"]
                                        if s["category_id"] in unseen_ids])
        assert example["ignore_mask"][:64, :64].numpy()[unseen_mask].all()
        assert not example["mask_labels"][:, :64, :64].numpy()[:, unseen_mask].any()


def test_world_split_rejects_unknown_labels(tmp_path):
    with pytest.raises(ValueError, match="labels must be 'seen' or 'all'"):
        generate_world_split(tmp_path, 1, "unseen")


def test_every_ensemble_mode_including_geometric_evaluates_seen_and_unseen_pq(splits):
    from conftest import tiny_model

    from possam.processing import PosSamProcessor
    from possam.processing.mase import ENSEMBLE_MODES
    from possam.training.open_vocabulary_experiment import evaluate_seen_unseen

    model = tiny_model().eval()
    model.config.training_vocabulary = world_vocabularies()[0].entries  # geometric's "seen", as training sets it
    processor = PosSamProcessor.for_model_config(model.config)
    _, all_split = splits
    per_mode = evaluate_seen_unseen(model, processor, all_split, SEEN_CLASSES, ENSEMBLE_MODES)
    assert list(per_mode) == list(ENSEMBLE_MODES)
    for metrics in per_mode.values():
        assert set(metrics) == {"pq", "pq_seen", "pq_unseen", "pq_things", "pq_stuff"}
        assert all(0.0 <= value <= 100.0 for value in metrics.values()), metrics
    # The model's own mode alone gives the same numbers as within the list (one forward pass serves all modes).
    assert evaluate_seen_unseen(model, processor, all_split, SEEN_CLASSES) == per_mode[model.config.ensemble_mode]
