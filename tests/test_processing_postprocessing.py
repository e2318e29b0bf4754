"""Panoptic, instance and semantic post-processing: a naive reference, properties, hand-built cases, geometry."""

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from transformers.pipelines.image_segmentation import ImageSegmentationPipeline

from possam.outputs import PosSamOutput
from possam.processing import (
    PosSamImageProcessor,
    post_process_instance_segmentation,
    post_process_panoptic_segmentation,
    post_process_semantic_segmentation,
)
from possam.processing.resizing import longest_edge_resize_shape


def make_outputs(probabilities, mask_scores, logits, is_thing=None):
    """One image's precomputed (already ensembled) scores and masks, as post-processing accepts them."""
    return dict(
        class_probabilities=torch.as_tensor(probabilities, dtype=torch.float32)[None],
        mask_scores=torch.as_tensor(mask_scores, dtype=torch.float32)[None],
        masks_queries_logits=torch.as_tensor(logits, dtype=torch.float32)[None],
        vocabulary_is_thing=None if is_thing is None else torch.as_tensor(is_thing, dtype=torch.bool),
    )


def reference_panoptic(probabilities, mask_scores, logits, stuff, threshold, mask_threshold, overlap):
    """Pixel-by-pixel transcription of SPEC section 3 (no resizing: masks are already at the output size)."""
    num_queries, num_classes = probabilities.shape[0], probabilities.shape[1] - 1
    probs = torch.sigmoid(logits)
    scores = probabilities[:, :num_classes].max(1).values * mask_scores
    kept = [k for k in range(num_queries) if probabilities[k].argmax() != num_classes and scores[k] > threshold]
    kept.sort(key=lambda k: -float(scores[k]))
    height, width = logits.shape[1:]
    owner = [[None] * width for _ in range(height)]
    for y in range(height):
        for x in range(width):
            best = None
            for k in kept:
                if best is None or scores[k] * probs[k, y, x] > scores[best] * probs[best, y, x]:
                    best = k
            if best is not None and probs[best, y, x] >= mask_threshold:
                owner[y][x] = best
    segmentation = torch.zeros((height, width), dtype=torch.int32)
    segments, stuff_ids = [], {}
    for k in kept:
        final = torch.tensor([[owner[y][x] == k for x in range(width)] for y in range(height)])
        own = int((probs[k] >= mask_threshold).sum())
        if own == 0 or final.sum() == 0 or int(final.sum()) / own < overlap:
            continue
        label = int(probabilities[k, :num_classes].argmax())
        if label in stuff and label in stuff_ids:
            segmentation[final] = stuff_ids[label]
            continue
        segment_id = len(segments) + 1
        segments.append({"id": segment_id, "label_id": label, "was_fused": label in stuff, "score": float(scores[k])})
        if label in stuff:
            stuff_ids[label] = segment_id
        segmentation[final] = segment_id
    return segmentation, segments


@st.composite
def predictions(draw, max_queries=6, max_classes=4, max_size=8):
    """Random predictions from a seeded generator (blob-like masks, optionally rounded to integers to create plateaus
    and exact ties between pixels); hypothesis picks the seed, the rounding and the stuff classes."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    num_queries, num_classes, size = (int(rng.integers(1, top + 1)) for top in (max_queries, max_classes, max_size))
    probabilities = rng.dirichlet(np.full(num_classes + 1, 0.5), size=num_queries)
    probabilities[:, -1] *= rng.uniform(0, 1, num_queries) < 0.7  # most queries are not void
    probabilities = probabilities.astype(np.float32)
    mask_scores = rng.uniform(0, 1, num_queries).astype(np.float32)
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"))[None]
    centers = rng.uniform(0, size, (num_queries, 2, 1, 1))
    radii = rng.uniform(0, size, (num_queries, 1, 1))
    distance = np.sqrt(((grid - centers) ** 2).sum(1))
    logits = 2.0 * (radii - distance) + rng.normal(0, 1, (num_queries, size, size))
    if draw(st.booleans()):
        logits = np.round(logits)
    stuff = draw(st.sets(st.integers(0, num_classes - 1)))
    return (
        torch.from_numpy(probabilities),
        torch.from_numpy(mask_scores),
        torch.from_numpy(logits.astype(np.float32)),
        stuff,
    )


PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(
    predictions(),
    st.sampled_from([0.0, 0.1]),
    st.sampled_from([0.5, 0.3]),
    st.sampled_from([0.8, 0.0, 0.5]),
)
def test_panoptic_equals_pixelwise_reference(prediction, threshold, mask_threshold, overlap):
    probabilities, mask_scores, logits, stuff = prediction
    size = logits.shape[-1]
    # padded_size = mask size: no resizing, so the reference can work on the raw logits.
    result = post_process_panoptic_segmentation(
        make_outputs(probabilities, mask_scores, logits),
        threshold=threshold,
        mask_threshold=mask_threshold,
        overlap_mask_area_threshold=overlap,
        label_ids_to_fuse=stuff,
        padded_size=size,
    )[0]
    scores = probabilities[:, :-1].max(1).values * mask_scores
    assume(len(set(scores.tolist())) == len(scores))  # ties between queries are broken by input order
    expected_map, expected_segments = reference_panoptic(
        probabilities, mask_scores, logits, stuff, threshold, mask_threshold, overlap
    )
    assert result["segmentation"].dtype == torch.int32
    assert torch.equal(result["segmentation"], expected_map)
    assert result["segments_info"] == expected_segments


@PROPERTY_SETTINGS
@given(predictions(), st.data())
def test_panoptic_properties_with_resizing(prediction, data):
    probabilities, mask_scores, logits, stuff = prediction
    target = (data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40)))
    result = post_process_panoptic_segmentation(
        make_outputs(probabilities, mask_scores, logits), label_ids_to_fuse=stuff, target_sizes=[target]
    )[0]
    segmentation, segments = result["segmentation"], result["segments_info"]
    assert segmentation.shape == target
    ids = [segment["id"] for segment in segments]
    assert ids == list(range(1, len(segments) + 1))
    assert set(segmentation.unique().tolist()) - {0} == set(ids)  # no empty segment, no unknown id
    # Every non-void pixel in exactly one listed segment, every listed segment non-empty.
    areas = [int((segmentation == i).sum()) for i in ids]
    assert all(area > 0 for area in areas) and sum(areas) == int((segmentation != 0).sum())
    stuff_labels = [s["label_id"] for s in segments if s["label_id"] in stuff]
    assert len(stuff_labels) == len(set(stuff_labels))
    assert all(s["was_fused"] == (s["label_id"] in stuff) for s in segments)
    assert [s["score"] for s in segments] == sorted((s["score"] for s in segments), reverse=True)


@PROPERTY_SETTINGS
@given(predictions(), st.data())
def test_results_do_not_depend_on_query_order(prediction, data):
    probabilities, mask_scores, logits, stuff = prediction
    scores = probabilities[:, :-1].max(1).values * mask_scores
    assume(len(set(scores.tolist())) == len(scores))
    order = torch.tensor(data.draw(st.permutations(range(len(scores)))))
    outputs = make_outputs(probabilities, mask_scores, logits)
    permuted = make_outputs(probabilities[order], mask_scores[order], logits[order])
    kwargs = {"target_sizes": [(9, 13)]}
    first = post_process_panoptic_segmentation(outputs, label_ids_to_fuse=stuff, **kwargs)[0]
    second = post_process_panoptic_segmentation(permuted, label_ids_to_fuse=stuff, **kwargs)[0]
    assert torch.equal(first["segmentation"], second["segmentation"])
    assert first["segments_info"] == second["segments_info"]
    first = post_process_semantic_segmentation(outputs, **kwargs)[0]
    second = post_process_semantic_segmentation(permuted, **kwargs)[0]
    # Semantic sums over queries: permuting changes the summation order, so allow float ties to differ.
    assert (first != second).float().mean() <= 0.05


@PROPERTY_SETTINGS
@given(predictions(), st.integers(1, 8), st.booleans())
def test_instance_properties(prediction, top_k, binary):
    probabilities, mask_scores, logits, stuff = prediction
    outputs = make_outputs(probabilities, mask_scores, logits)
    result = post_process_instance_segmentation(
        outputs, top_k=top_k, stuff_label_ids=stuff, return_binary_maps=True, target_sizes=[(11, 6)]
    )[0]
    masks, segments = result["segmentation"], result["segments_info"]
    assert masks.dtype == torch.bool and masks.shape == (len(segments), 11, 6)
    assert len(segments) <= top_k
    assert [s["id"] for s in segments] == list(range(1, len(segments) + 1))
    assert all(s["label_id"] not in stuff for s in segments)
    assert all(masks.flatten(1).any(1))
    assert [s["score"] for s in segments] == sorted((s["score"] for s in segments), reverse=True)
    id_map = post_process_instance_segmentation(outputs, top_k=top_k, stuff_label_ids=stuff, target_sizes=[(11, 6)])[0]
    assert id_map["segments_info"] == segments
    # The id map shows, at each pixel, the best-scoring instance covering it.
    expected = torch.zeros((11, 6), dtype=torch.int32)
    for index in reversed(range(len(segments))):
        expected[masks[index]] = index + 1
    assert torch.equal(id_map["segmentation"], expected)


# ------------------------------------------------------------------------------------------------ hand-built cases


def halves(size, left_value, right_value):
    logits = torch.full((size, size), float(right_value))
    logits[:, : size // 2] = left_value
    return logits


def test_low_class_probability_with_confident_mask_survives():
    # Open vocabularies spread probability over hundreds of classes: 0.2 is a confident answer. Mask2Former's
    # post-processing measures area after weighting the mask by that score and would drop it; PosSAM must not.
    probabilities = torch.tensor([[0.2, 0.05, 0.05, 0.1], [0.1, 0.1, 0.1, 0.7]])
    logits = torch.stack([halves(8, 6.0, -6.0), torch.full((8, 8), 6.0)])
    result = post_process_panoptic_segmentation(make_outputs(probabilities, [0.95, 1.0], logits), padded_size=8)[0]
    assert result["segments_info"] == [{"id": 1, "label_id": 0, "was_fused": False, "score": pytest.approx(0.19)}]
    assert (result["segmentation"][:, :4] == 1).all() and (result["segmentation"][:, 4:] == 0).all()


def test_overlap_threshold_drops_mostly_covered_segment():
    probabilities = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.8, 0.0]])
    first, second = torch.full((8, 8), -6.0), torch.full((8, 8), -6.0)
    first[:, :6] = 6.0
    second[:, 3:] = 6.0
    outputs = make_outputs(probabilities, [1.0, 1.0], torch.stack([first, second]))
    # The second segment keeps 2 of its 5 columns (0.4).
    result = post_process_panoptic_segmentation(outputs, padded_size=8)[0]
    assert [s["label_id"] for s in result["segments_info"]] == [0]
    assert (result["segmentation"][:, :6] == 1).all() and (result["segmentation"][:, 6:] == 0).all()
    result = post_process_panoptic_segmentation(outputs, padded_size=8, overlap_mask_area_threshold=0.4)[0]
    assert [s["label_id"] for s in result["segments_info"]] == [0, 1]
    assert (result["segmentation"][:, 6:] == 2).all()


def test_stuff_segments_merge_per_class():
    probabilities = torch.tensor([[0.0, 0.0, 0.9, 0.0], [0.0, 0.0, 0.7, 0.0], [0.6, 0.0, 0.0, 0.0]])
    logits = torch.full((3, 6, 6), -6.0)
    logits[0, :2] = 6.0
    logits[1, 2:4] = 6.0
    logits[2, 4:] = 6.0
    outputs = make_outputs(probabilities, [1.0, 1.0, 1.0], logits, is_thing=[True, True, False])
    merged = post_process_panoptic_segmentation(outputs, padded_size=6)[0]  # stuff from vocabulary_is_thing
    assert merged["segments_info"] == [
        {"id": 1, "label_id": 2, "was_fused": True, "score": pytest.approx(0.9)},
        {"id": 2, "label_id": 0, "was_fused": False, "score": pytest.approx(0.6)},
    ]
    assert (merged["segmentation"][:4] == 1).all() and (merged["segmentation"][4:] == 2).all()
    separate = post_process_panoptic_segmentation(outputs, padded_size=6, label_ids_to_fuse=[])[0]
    assert [s["label_id"] for s in separate["segments_info"]] == [2, 2, 0]
    assert (separate["segmentation"][2:4] == 2).all()


def test_pixels_below_mask_threshold_are_void():
    logits = torch.full((1, 4, 4), 0.5)  # sigmoid 0.62
    outputs = make_outputs(torch.tensor([[1.0, 0.0]]), [1.0], logits)
    assert len(post_process_panoptic_segmentation(outputs, padded_size=4)[0]["segments_info"]) == 1
    result = post_process_panoptic_segmentation(outputs, padded_size=4, mask_threshold=0.7)[0]
    assert result["segments_info"] == [] and (result["segmentation"] == 0).all()


def test_instance_scores_and_overlaps():
    probabilities = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.7, 0.2]])
    logits = torch.stack([halves(8, 2.0, -4.0), torch.full((8, 8), 1.0)])
    outputs = make_outputs(probabilities, [0.9, 0.5], logits)
    result = post_process_instance_segmentation(outputs, top_k=3, padded_size=8, return_binary_maps=True)[0]
    sigmoid = torch.sigmoid(torch.tensor([2.0, 1.0])).tolist()
    assert result["segments_info"] == [
        {"id": 1, "label_id": 0, "was_fused": False, "score": pytest.approx(0.6 * sigmoid[0] * 0.9)},
        {"id": 2, "label_id": 1, "was_fused": False, "score": pytest.approx(0.7 * sigmoid[1] * 0.5)},
        {"id": 3, "label_id": 1, "was_fused": False, "score": pytest.approx(0.3 * sigmoid[0] * 0.9)},
    ]
    masks = result["segmentation"]
    assert masks[0, :, :4].all() and not masks[0, :, 4:].any() and masks[1].all() and torch.equal(masks[2], masks[0])
    id_map = post_process_instance_segmentation(outputs, top_k=3, padded_size=8)[0]["segmentation"]
    assert (id_map[:, :4] == 1).all() and (id_map[:, 4:] == 2).all()
    things_only = post_process_instance_segmentation(outputs, top_k=3, padded_size=8, stuff_label_ids=[1])[0]
    assert [s["label_id"] for s in things_only["segments_info"]] == [0]
    assert (things_only["segmentation"][:, 4:] == 0).all()
    assert (
        post_process_instance_segmentation(outputs, top_k=3, padded_size=8, threshold=0.3)[0]["segments_info"][0]["id"]
        == 1
    )
    assert (
        len(post_process_instance_segmentation(outputs, top_k=3, padded_size=8, threshold=0.3)[0]["segments_info"])
        == 1
    )


def test_semantic_sums_queries_weighted_by_class_probability():
    probabilities = torch.tensor([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0]])
    logits = torch.stack([torch.full((4, 4), 10.0), halves(4, -10.0, 10.0)])
    semantic = post_process_semantic_segmentation(make_outputs(probabilities, [1.0, 1.0], logits), padded_size=4)[0]
    assert semantic.dtype == torch.int64
    assert (semantic[:, :2] == 0).all() and (semantic[:, 2:] == 1).all()


def test_semantic_matches_interpolate_reference():
    torch.manual_seed(0)
    probabilities = torch.rand(5, 4)
    logits = torch.randn(5, 8, 8) * 4
    target = (19, 11)
    result = post_process_semantic_segmentation(
        make_outputs(probabilities, torch.ones(5), logits), target_sizes=[target]
    )[0]
    valid = longest_edge_resize_shape(*target, 32)
    upsampled = F.interpolate(logits[None], size=(32, 32), mode="bilinear", align_corners=False)
    resized = F.interpolate(upsampled[..., : valid[0], : valid[1]], size=target, mode="bilinear", align_corners=False)[
        0
    ]
    scores = torch.einsum("kc,khw->chw", probabilities[:, :3], resized.sigmoid())
    top2 = scores.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 1e-4  # pixels not on a float tie
    assert decided.float().mean() > 0.9
    assert torch.equal(result[decided], scores.argmax(0)[decided])


# ------------------------------------------------------------------------------------------------ geometry


def test_padding_is_cropped_and_non_square_image_resized():
    # S = 64, masks 16x16. A 30x60 image was resized to 32x64, i.e. the top half of the padded input.
    top, padding = torch.full((16, 16), -8.0), torch.full((16, 16), -8.0)
    top[:4] = 8.0  # input rows 0..15: the top half of the image
    padding[8:] = 8.0  # input rows 32..63: only padding
    outputs = make_outputs(torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.9, 0.0]]), [1.0, 1.0], torch.stack([top, padding]))
    result = post_process_panoptic_segmentation(outputs, target_sizes=[(30, 60)])[0]
    assert result["segmentation"].shape == (30, 60)
    assert result["segments_info"] == [{"id": 1, "label_id": 0, "was_fused": False, "score": pytest.approx(0.9)}]
    assert (result["segmentation"][:15] == 1).all() and (result["segmentation"][15:] == 0).all()
    # Same with the reshaped size given explicitly, and without target size (stays at the resized size).
    explicit = post_process_panoptic_segmentation(outputs, target_sizes=[(30, 60)], reshaped_input_sizes=[(32, 64)])[0]
    assert torch.equal(explicit["segmentation"], result["segmentation"])
    resized = post_process_panoptic_segmentation(outputs, reshaped_input_sizes=torch.tensor([[32, 64]]))[0]
    assert resized["segmentation"].shape == (32, 64)
    assert (resized["segmentation"][:16] == 1).all() and (resized["segmentation"][16:] == 0).all()
    # Through the image processor, whose size gives S.
    processor = PosSamImageProcessor(size=64)
    assert torch.equal(
        processor.post_process_panoptic_segmentation(outputs, target_sizes=[(30, 60)])[0]["segmentation"],
        result["segmentation"],
    )


@pytest.mark.parametrize("column_block", [128, 7])
def test_resizing_matches_three_interpolate_calls(monkeypatch, column_block):
    import possam.processing.postprocessing as postprocessing

    monkeypatch.setattr(postprocessing, "COLUMN_BLOCK", column_block)
    torch.manual_seed(1)
    logits = torch.randn(3, 16, 16) * 5
    for target in [(30, 60), (61, 17), (64, 64), (5, 3), (200, 90), (90, 300)]:
        valid = longest_edge_resize_shape(*target, 64)
        expected = F.interpolate(logits[None], size=(64, 64), mode="bilinear", align_corners=False)
        expected = F.interpolate(
            expected[..., : valid[0], : valid[1]], size=target, mode="bilinear", align_corners=False
        )[0]
        plan = postprocessing._ResizePlan((16, 16), 64, valid, target, "cpu")
        blocks = plan.column_blocks
        assert len(blocks) == -(-target[1] // column_block)
        if target[1] >= 4 * column_block:  # each block of output columns reads only the mask columns it needs
            assert max(in_stop - in_start for _, _, in_start, in_stop, _ in blocks) < 16
        bands = list(plan.bands(logits))
        assert bands[0][0] == 0 and bands[-1][1] == target[0]
        torch.testing.assert_close(torch.cat([band for _, _, band in bands], 1), expected, atol=1e-4, rtol=0)


def test_batch_of_images_with_different_sizes():
    torch.manual_seed(2)
    outputs = dict(
        class_probabilities=torch.rand(2, 4, 3),
        mask_scores=torch.rand(2, 4),
        masks_queries_logits=torch.randn(2, 4, 8, 8),
    )
    results = post_process_panoptic_segmentation(outputs, target_sizes=[(10, 20), (25, 7)])
    assert [r["segmentation"].shape for r in results] == [(10, 20), (25, 7)]
    single = post_process_panoptic_segmentation(
        {name: value[1:] for name, value in outputs.items()},
        target_sizes=[(25, 7)],
    )[0]
    assert torch.equal(single["segmentation"], results[1]["segmentation"])
    assert [
        r.shape for r in post_process_semantic_segmentation(outputs, target_sizes=torch.tensor([[10, 20], [25, 7]]))
    ] == [(10, 20), (25, 7)]


# ------------------------------------------------------------------------------------------------ interfaces


def test_works_inside_transformers_image_segmentation_pipeline():
    processor = PosSamImageProcessor(size=32)
    probabilities = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])
    logits = torch.stack([halves(8, 6.0, -6.0), halves(8, -6.0, 6.0)])
    outputs = make_outputs(probabilities, [1.0, 1.0], logits)
    outputs["target_size"] = [(20, 40)]  # what the pipeline's _forward adds
    fake_pipeline = types.SimpleNamespace(
        image_processor=processor,
        model=types.SimpleNamespace(config=types.SimpleNamespace(id2label={0: "cat", 1: "dog"})),
    )
    annotation = ImageSegmentationPipeline.postprocess(fake_pipeline, outputs, threshold=0.0)
    assert [(a["label"], round(a["score"], 3)) for a in annotation] == [("cat", 0.9), ("dog", 0.9)]
    masks = [np.array(a["mask"]) > 0 for a in annotation]
    assert masks[0].shape == (20, 40) and masks[0][:, :20].all() and not masks[0][:, 20:].any()
    assert masks[1][:, 20:].all()


def test_missing_inference_fields_and_bad_shapes():
    with pytest.raises(ValueError, match=r"lacks \['class_queries_logits', 'clip_logits', 'iou_scores'\]"):
        post_process_panoptic_segmentation(PosSamOutput(masks_queries_logits=torch.zeros(1, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"lacks \['clip_logits'\]"):
        post_process_semantic_segmentation(
            {"masks_queries_logits": torch.zeros(1, 2, 4, 4), "class_queries_logits": torch.zeros(1, 2, 3),
             "iou_scores": torch.zeros(1, 2)}
        )
    with pytest.raises(ValueError, match="precomputed class_probabilities"):
        post_process_panoptic_segmentation(
            make_outputs(torch.rand(2, 3), torch.rand(2), torch.rand(2, 4, 4)), ensemble_mode="clip_only"
        )
    with pytest.raises(ValueError, match="disagree on"):
        post_process_instance_segmentation(make_outputs(torch.rand(3, 2), torch.rand(2), torch.rand(2, 4, 4)))
    with pytest.raises(ValueError, match=r"vocabulary_is_thing has shape \(3,\) but class_probabilities has 2 classes"):
        post_process_panoptic_segmentation(
            make_outputs(torch.rand(2, 3), torch.rand(2), torch.rand(2, 4, 4), [True] * 3)
        )
    with pytest.raises(ValueError, match="target_sizes must hold one positive"):
        post_process_panoptic_segmentation(
            make_outputs(torch.rand(2, 3), torch.rand(2), torch.rand(2, 4, 4)), target_sizes=[(4, 4), (4, 4)]
        )
    with pytest.raises(ValueError, match="does not fit"):
        post_process_panoptic_segmentation(
            make_outputs(torch.rand(2, 3), torch.rand(2), torch.rand(2, 4, 4)), reshaped_input_sizes=[(40, 4)]
        )
    with pytest.raises(ValueError, match="mask_threshold must be in"):
        post_process_panoptic_segmentation(
            make_outputs(torch.rand(2, 3), torch.rand(2), torch.rand(2, 4, 4)), mask_threshold=2
        )


def test_band_by_band_processing_equals_one_band(monkeypatch):
    import possam.processing.postprocessing as postprocessing

    torch.manual_seed(3)
    probabilities = torch.rand(1, 6, 4)
    probabilities[..., -1] = 0.0
    # Query k is confident on a diagonal stripe of its own, with noise: overlapping, irregular segments.
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    logits = torch.stack([3.0 - (rows + cols - 2.5 * k).abs() for k in range(6)]) + torch.randn(6, 8, 8)
    outputs = dict(
        class_probabilities=probabilities,
        mask_scores=torch.rand(1, 6),
        masks_queries_logits=logits[None],
        vocabulary_is_thing=torch.tensor([True, False, True]),
    )
    kwargs = {"target_sizes": [(23, 17)]}
    whole = (
        post_process_panoptic_segmentation(outputs, overlap_mask_area_threshold=0.5, **kwargs)[0],
        post_process_instance_segmentation(outputs, return_binary_maps=True, **kwargs)[0],
        post_process_semantic_segmentation(outputs, **kwargs)[0],
    )
    assert len(whole[0]["segments_info"]) >= 2 and len(whole[1]["segments_info"]) >= 2
    monkeypatch.setattr(postprocessing, "BAND_ELEMENTS", 100)  # one or two rows per band
    plan = postprocessing._ResizePlan((8, 8), 32, (32, 24), (23, 17), "cpu")
    assert len(list(plan.bands(torch.zeros(6, 8, 8)))) > 10
    banded = (
        post_process_panoptic_segmentation(outputs, overlap_mask_area_threshold=0.5, **kwargs)[0],
        post_process_instance_segmentation(outputs, return_binary_maps=True, **kwargs)[0],
        post_process_semantic_segmentation(outputs, **kwargs)[0],
    )
    assert torch.equal(whole[0]["segmentation"], banded[0]["segmentation"])
    assert whole[0]["segments_info"] == banded[0]["segments_info"]
    assert torch.equal(whole[1]["segmentation"], banded[1]["segmentation"])
    assert [s["label_id"] for s in whole[1]["segments_info"]] == [s["label_id"] for s in banded[1]["segments_info"]]
    assert [s["score"] for s in whole[1]["segments_info"]] == pytest.approx(
        [s["score"] for s in banded[1]["segments_info"]]
    )
    assert torch.equal(whole[2], banded[2])
