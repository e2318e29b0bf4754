"""The class ensemble is post-processing: one forward pass, every ensemble mode, the same output fields in train and
eval mode, and `geometric` usable in evaluation."""

from __future__ import annotations

import pytest
import torch
from conftest import make_labels, make_pixels, make_vocabulary, tiny_model, tiny_processor

from possam.processing import (
    post_process_instance_segmentation,
    post_process_panoptic_segmentation,
    post_process_semantic_segmentation,
)
from possam.processing.mase import ENSEMBLE_MODES, ensemble_class_probabilities, seen_class_mask


SEEN = torch.tensor([True, False, True, False])


def fixed_outputs(seed: int = 0) -> dict:
    """Model outputs on fixed random logits: 2 images, 6 queries, 4 classes, 8x8 masks."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "class_queries_logits": 3 * torch.randn(2, 6, 5, generator=generator),
        "clip_logits": 3 * torch.randn(2, 6, 4, generator=generator),
        "iou_scores": torch.rand(2, 6, generator=generator),
        "masks_queries_logits": 4 * torch.randn(2, 6, 8, 8, generator=generator),
    }


def in_model_ensemble(outputs: dict, config, mode: str, seen) -> dict:
    """What `PosSamModel.forward` computed in eval mode before the ensemble moved to post-processing (commit cf92674:
    `ensemble_class_probabilities(...)` and `iou_scores ** iou_score_exponent`), as post-processing then read it."""
    return {
        "class_probabilities": ensemble_class_probabilities(
            outputs["class_queries_logits"], outputs["clip_logits"], outputs["iou_scores"], config, mode, seen
        ),
        "mask_scores": outputs["iou_scores"] ** config.iou_score_exponent,
        "masks_queries_logits": outputs["masks_queries_logits"],
    }


def assert_same_segmentations(actual: list, expected: list) -> None:
    assert len(actual) == len(expected)
    for mine, reference in zip(actual, expected):
        if isinstance(reference, torch.Tensor):
            assert torch.equal(mine, reference)
            continue
        assert torch.equal(mine["segmentation"], reference["segmentation"])
        assert mine["segments_info"] == reference["segments_info"]


@pytest.mark.parametrize("mode", ENSEMBLE_MODES)
def test_every_mode_in_post_processing_equals_the_former_in_model_ensemble(mode):
    config = tiny_model(iou_score_exponent=2.0, ensemble_alpha=0.3, ensemble_beta=0.9).config
    outputs = fixed_outputs()
    seen = SEEN if mode == "geometric" else None
    reference = in_model_ensemble(outputs, config, mode, seen)
    ensemble = {"ensemble_mode": mode, "seen_classes": seen, "config": config}
    sizes = {"target_sizes": [(20, 30), (31, 17)]}
    assert_same_segmentations(
        post_process_panoptic_segmentation(outputs, label_ids_to_fuse=[1, 3], **ensemble, **sizes),
        post_process_panoptic_segmentation(reference, label_ids_to_fuse=[1, 3], **sizes),
    )
    assert_same_segmentations(
        post_process_instance_segmentation(outputs, stuff_label_ids=[3], return_binary_maps=True, **ensemble, **sizes),
        post_process_instance_segmentation(reference, stuff_label_ids=[3], return_binary_maps=True, **sizes),
    )
    assert_same_segmentations(
        post_process_semantic_segmentation(outputs, **ensemble, **sizes),
        post_process_semantic_segmentation(reference, **sizes),
    )


def test_modes_differ_and_the_config_supplies_the_default_mode():
    outputs = fixed_outputs(seed=1)
    config = tiny_model().config
    results = {
        mode: post_process_semantic_segmentation(
            outputs, ensemble_mode=mode, seen_classes=SEEN if mode == "geometric" else None, config=config
        )[0]
        for mode in ENSEMBLE_MODES
    }
    assert not torch.equal(results["ldp_only"], results["clip_only"])  # the test can tell modes apart
    config.ensemble_mode = "clip_only"
    assert torch.equal(post_process_semantic_segmentation(outputs, config=config)[0], results["clip_only"])
    # Without a config, PosSamConfig's defaults: MASE.
    assert torch.equal(post_process_semantic_segmentation(outputs)[0], results["mase"])


def test_geometric_needs_seen_classes_with_a_clear_error():
    with pytest.raises(ValueError, match="needs `seen_classes`"):
        post_process_panoptic_segmentation(fixed_outputs(), ensemble_mode="geometric")


def test_processor_geometric_takes_seen_classes_from_the_training_vocabulary():
    model = tiny_model(training_vocabulary=["cat", "grass"]).eval()
    processor = tiny_processor()
    vocabulary = ["cat", "person,child", "lawn,grass"]
    with torch.no_grad():
        outputs = model(pixel_values=make_pixels(1), **processor(text=vocabulary))
    result = processor.post_process_semantic_segmentation(outputs, vocabulary, ensemble_mode="geometric", config=model.config)
    seen = seen_class_mask(vocabulary, ["cat", "grass"])
    assert seen.tolist() == [True, False, True]
    expected = post_process_semantic_segmentation(outputs, ensemble_mode="geometric", seen_classes=seen, config=model.config)
    assert torch.equal(result[0], expected[0])
    # An explicit training vocabulary overrides the config's.
    overridden = processor.post_process_semantic_segmentation(
        outputs, vocabulary, ensemble_mode="geometric", config=model.config, training_vocabulary=["person"]
    )
    expected = post_process_semantic_segmentation(
        outputs, ensemble_mode="geometric", seen_classes=torch.tensor([False, True, False]), config=model.config
    )
    assert torch.equal(overridden[0], expected[0])
    model.config.training_vocabulary = None
    with pytest.raises(ValueError, match="no training vocabulary is known"):
        processor.post_process_panoptic_segmentation(outputs, vocabulary, ensemble_mode="geometric", config=model.config)


@pytest.mark.parametrize("with_labels", [False, True])
def test_output_fields_are_the_same_in_train_and_eval_mode(with_labels):
    model = tiny_model()
    inputs = {"pixel_values": make_pixels(2), **make_vocabulary(3)}
    if with_labels:
        inputs["mask_labels"], inputs["class_labels"] = make_labels(2, 3)
    keys = {}
    for mode in ("train", "eval"):
        getattr(model, mode)()
        torch.manual_seed(0)
        output = model(**inputs)
        keys[mode] = list(output.keys())
        # Whatever the mode, post-processing gets what it needs from the output.
        assert len(post_process_panoptic_segmentation(output)) == 2
    assert keys["train"] == keys["eval"]
    expected = ["class_queries_logits", "masks_queries_logits", "iou_scores", "clip_logits"]
    assert keys["eval"] == (["loss", "loss_dict"] if with_labels else []) + expected


def evaluation_parts(splits):
    from possam.training import PanopticEvaluationDataset, PosSamDataCollator, load_coco_panoptic

    processor = tiny_processor()
    val, vocabulary = load_coco_panoptic(
        splits["val"].json_path, splits["val"].image_dir, synonyms_from=splits["val"].vocabulary_path
    )
    dataset = PanopticEvaluationDataset(val, processor.image_processor)
    return dataset, PosSamDataCollator(processor.encode_vocabulary(vocabulary)), processor.image_processor, vocabulary


def test_an_ablation_over_modes_runs_one_forward_pass_per_image_and_geometric_evaluates(synthetic_splits):
    from possam.training import evaluate_panoptic

    dataset, collator, image_processor, vocabulary = evaluation_parts(synthetic_splits)
    # Training saw two of the classes: "geometric" weighs CLIP less on them.
    model = tiny_model(training_vocabulary=vocabulary.entries[:2]).eval()
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(1))
    arguments = (model, dataset, collator, image_processor, vocabulary)
    ablation = evaluate_panoptic(*arguments, batch_size=2, ensemble_mode=list(ENSEMBLE_MODES), show_progress=False)
    assert len(calls) == len(dataset) // 2  # one forward pass per batch of images, for the four modes
    for mode in ENSEMBLE_MODES:
        alone = evaluate_panoptic(*arguments, batch_size=2, ensemble_mode=mode, show_progress=False)
        names = [name[len("eval_"):] for name in alone]
        assert "pq" in names and "miou" in names
        for name in names:
            assert ablation[f"eval_{mode}_{name}"] == pytest.approx(alone[f"eval_{name}"], nan_ok=True), (mode, name)
    model.config.training_vocabulary = None
    with pytest.raises(ValueError, match="no training vocabulary is known"):
        evaluate_panoptic(*arguments, ensemble_mode="geometric", show_progress=False)
