"""MASE on hand-built logits: per-image seen/unseen decisions, their weighting, and the ablation modes."""

from __future__ import annotations

import math

import pytest
import torch

from possam import possam_preset
from possam.processing.mase import ensemble_class_probabilities, mase_seen_classes, seen_class_mask


CONFIG = possam_preset("tiny")  # alpha 0.4, beta 0.8, tau_iou 0.5, tau_conf 0.5, void threshold 0.5


def logits_from_probabilities(probabilities: list[float]) -> torch.Tensor:
    return torch.tensor(probabilities).log()


def expected_probabilities(ldp: torch.Tensor, clip: torch.Tensor, void: float, clip_weights: torch.Tensor) -> torch.Tensor:
    """The spec's formula written out: softmax((1 - w) log p_ldp + w log p_clip) * (1 - void)."""
    mixed = (1 - clip_weights) * ldp.log() + clip_weights * clip.log()
    return mixed.softmax(-1) * (1 - void)


def one_image(ldp_with_void: list[list[float]], clip: list[list[float]], iou: list[float]):
    return (
        torch.stack([logits_from_probabilities(row) for row in ldp_with_void])[None],
        torch.stack([logits_from_probabilities(row) for row in clip])[None],
        torch.tensor(iou)[None],
    )


def test_reliable_confident_query_makes_its_class_seen_and_others_unseen():
    # Query 0: LDP says class 0 with 0.9 (of the non-void mass), IoU 0.9, void 0.1 -> class 0 seen in this image.
    # Query 1: LDP says class 1 but its mask is poor (IoU 0.3) -> no vote; class 1 and 2 stay unseen.
    ldp = [[0.81, 0.045, 0.045, 0.1], [0.1, 0.7, 0.1, 0.1]]
    clip = [[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]]
    class_logits, clip_logits, iou = one_image(ldp, clip, [0.9, 0.3])
    probabilities = ensemble_class_probabilities(class_logits, clip_logits, iou, CONFIG)

    weights = torch.tensor([0.4, 0.8, 0.8])  # alpha for the seen class 0, beta for the unseen ones
    for query in range(2):
        ldp_classes = torch.tensor(ldp[query][:3]) / sum(ldp[query][:3])
        expected = expected_probabilities(ldp_classes, torch.tensor(clip[query]), ldp[query][3], weights)
        torch.testing.assert_close(probabilities[0, query, :3], expected)
        assert math.isclose(probabilities[0, query, 3].item(), ldp[query][3], rel_tol=1e-5)


def test_seen_classes_are_decided_per_image():
    ldp = torch.tensor([[[0.9, 0.05, 0.05]], [[0.9, 0.05, 0.05]]])
    void = torch.tensor([[0.1], [0.1]])
    iou = torch.tensor([[0.8], [0.2]])  # the same prediction, reliable in image 0 only
    seen = mase_seen_classes(ldp, void, iou, iou_threshold=0.5, confidence_threshold=0.5, void_threshold=0.5)
    assert seen.tolist() == [[True, False, False], [False, False, False]]


@pytest.mark.parametrize(
    "confidence,void,iou,votes",
    [(0.9, 0.1, 0.9, True), (0.4, 0.1, 0.9, False), (0.9, 0.6, 0.9, False), (0.9, 0.1, 0.4, False), (0.5, 0.1, 0.5, True)],
)
def test_a_vote_needs_confidence_iou_and_no_void(confidence, void, iou, votes):
    ldp = torch.tensor([[[confidence, 1 - confidence]]])
    seen = mase_seen_classes(ldp, torch.tensor([[void]]), torch.tensor([[iou]]), 0.5, 0.5, 0.5)
    assert seen[0, 0].item() is votes


def test_a_class_voted_seen_keeps_more_of_ldps_confidence():
    """LDP and CLIP disagree; LDP's class keeps more probability when a reliable mask made it "seen" (weight alpha)
    than when the same prediction comes from a poor mask (IoU 0.1, no vote: weight beta for every class)."""
    ldp = [[0.72, 0.18, 0.1]]  # LDP: class 0 (0.8 of the non-void mass)
    clip = [[0.2, 0.8]]  # CLIP: class 1
    seen_case = ensemble_class_probabilities(*one_image(ldp, clip, [0.9]), CONFIG)
    unseen_case = ensemble_class_probabilities(*one_image(ldp, clip, [0.1]), CONFIG)
    assert seen_case[0, 0, 0] > unseen_case[0, 0, 0] + 0.05
    torch.testing.assert_close(
        unseen_case[0, 0, :2], expected_probabilities(torch.tensor([0.8, 0.2]), torch.tensor([0.2, 0.8]), 0.1, torch.tensor([0.8, 0.8]))
    )


def test_ablation_modes():
    ldp = [[0.6, 0.3, 0.1]]
    clip = [[0.25, 0.75]]
    inputs = one_image(ldp, clip, [0.9])
    ldp_only = ensemble_class_probabilities(*inputs, CONFIG, ensemble_mode="ldp_only")
    clip_only = ensemble_class_probabilities(*inputs, CONFIG, ensemble_mode="clip_only")
    torch.testing.assert_close(ldp_only[0, 0], torch.tensor([0.6, 0.3, 0.1]))
    torch.testing.assert_close(clip_only[0, 0], torch.tensor([0.25 * 0.9, 0.75 * 0.9, 0.1]))
    geometric = ensemble_class_probabilities(*inputs, CONFIG, ensemble_mode="geometric", seen_classes=torch.tensor([False, True]))
    expected = expected_probabilities(torch.tensor([2 / 3, 1 / 3]), torch.tensor([0.25, 0.75]), 0.1, torch.tensor([0.8, 0.4]))
    torch.testing.assert_close(geometric[0, 0, :2], expected)


def test_geometric_mode_requires_seen_classes_and_mode_names_are_checked():
    inputs = one_image([[0.6, 0.3, 0.1]], [[0.25, 0.75]], [0.9])
    with pytest.raises(ValueError, match="needs `seen_classes`"):
        ensemble_class_probabilities(*inputs, CONFIG, ensemble_mode="geometric")
    with pytest.raises(ValueError, match="ensemble_mode must be one of"):
        ensemble_class_probabilities(*inputs, CONFIG, ensemble_mode="average")


def test_seen_class_mask_matches_names_and_synonyms_case_insensitively():
    mask = seen_class_mask(["Person", "tree,trees", "zebra"], ["person,child", "grass", "Trees"])
    assert mask.tolist() == [True, True, False]
