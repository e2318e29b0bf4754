"""Post-processing of [`PosSamOutput`] into panoptic, instance and semantic segmentations (SPEC.md section 3).

All three first turn the model output into per-query scores with the class ensemble (`mase.py`: `ensemble_mode`,
default `config.ensemble_mode`), so one forward pass can be post-processed in every mode:

- `class_probabilities` (B, K, C + 1): ensembled class probabilities, void last, classes scaled by (1 - void), from
  `class_queries_logits`, `clip_logits` and `iou_scores` (or given precomputed, with `mask_scores`);
- `mask_scores` (B, K): how much each mask is trusted (predicted IoU ** gamma);
- `masks_queries_logits` (B, K, h, w): mask logits at stride 4 of the padded S x S input;
- `vocabulary_is_thing` (C,) or (B, C), optional: thing flags, used when no stuff classes are given.

Masks go back to the image the way pre-processing came from it: bilinear upsampling to S x S, cropping of the
padding, bilinear resizing to the requested size (see `resizing.py`). Two behaviours of transformers' Mask2Former
post-processing are deliberately not reproduced because they silently drop low-scoring open-vocabulary segments:
masks are never resized to a fixed intermediate size, and a segment's area is measured on its own unweighted mask,
never after multiplying the mask by its class score.

Pixels are processed in bands of rows so that K full-resolution masks never sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..configuration import PosSamConfig
from .mase import ensemble_scores
from .resizing import longest_edge_resize_shape, mask_to_image_matrix


# Elements of the largest temporary tensor one band may create (32 MB of float32; smaller bands stay in cache).
BAND_ELEMENTS = 1 << 23
# Output columns per matrix product when a band's columns are resized.
COLUMN_BLOCK = 128


@dataclass
class _Predictions:
    class_probabilities: torch.Tensor  # (B, K, C + 1)
    mask_scores: torch.Tensor  # (B, K)
    mask_logits: torch.Tensor  # (B, K, h, w)
    stuff_label_ids: set[int] | None  # from vocabulary_is_thing

    @property
    def num_classes(self) -> int:
        return self.class_probabilities.shape[-1] - 1


def _field(outputs, name: str):
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


def read_predictions(
    outputs,
    config: PosSamConfig | None = None,
    ensemble_mode: str | None = None,
    seen_classes: torch.BoolTensor | None = None,
) -> _Predictions:
    """Checks and extracts the fields post-processing uses from a `PosSamOutput` (or any dict with those keys),
    ensembling the class logits (see `mase.ensemble_outputs`) unless `class_probabilities` and `mask_scores` are given.
    """
    probabilities = _field(outputs, "class_probabilities")
    mask_scores = _field(outputs, "mask_scores")
    masks = _field(outputs, "masks_queries_logits")
    if probabilities is None or mask_scores is None:
        logits = {name: _field(outputs, name) for name in ("class_queries_logits", "clip_logits", "iou_scores")}
        missing = [name for name, value in logits.items() if value is None]
        if missing:
            raise ValueError(
                f"The model output lacks {missing}: post-processing needs the class logits, CLIP logits and IoU scores "
                "of a PosSamModel output (or precomputed class_probabilities and mask_scores)."
            )
        probabilities, mask_scores = ensemble_scores(*logits.values(), config, ensemble_mode, seen_classes)
    elif ensemble_mode is not None or seen_classes is not None:
        raise ValueError(
            "The outputs hold precomputed class_probabilities and mask_scores; ensemble_mode / seen_classes apply to "
            "model outputs (class_queries_logits, clip_logits, iou_scores) only."
        )
    if masks is None:
        raise ValueError("The model output has no masks_queries_logits to post-process.")
    if probabilities.ndim != 3 or masks.ndim != 4 or mask_scores.ndim != 2:
        raise ValueError(
            "Expected class_probabilities (B, K, C+1), mask_scores (B, K) and masks_queries_logits (B, K, h, w), got "
            f"shapes {tuple(probabilities.shape)}, {tuple(mask_scores.shape)} and {tuple(masks.shape)}."
        )
    if probabilities.shape[:2] != masks.shape[:2] or tuple(mask_scores.shape) != tuple(masks.shape[:2]):
        raise ValueError(
            "class_probabilities, mask_scores and masks_queries_logits disagree on (batch, queries): "
            f"{tuple(probabilities.shape[:2])}, {tuple(mask_scores.shape)}, {tuple(masks.shape[:2])}."
        )
    if probabilities.shape[-1] < 2:
        raise ValueError(
            f"class_probabilities needs at least one class and the void column, got {probabilities.shape[-1]} columns."
        )
    is_thing = _field(outputs, "vocabulary_is_thing")
    stuff = None
    if is_thing is not None:
        # (C,) or one row per image (B, C); a call has one vocabulary, so every row holds the same flags.
        is_thing = torch.as_tensor(is_thing, dtype=torch.bool)
        if is_thing.shape[-1] != probabilities.shape[-1] - 1 or is_thing.ndim > 2:
            raise ValueError(
                f"vocabulary_is_thing has shape {tuple(is_thing.shape)} but class_probabilities has "
                f"{probabilities.shape[-1] - 1} classes: expected (C,) or (batch, C)."
            )
        stuff = set(torch.nonzero(~is_thing.reshape(-1, is_thing.shape[-1])[0]).flatten().tolist())
    # Post-processing never back-propagates: outputs of a model in training mode come with gradients.
    return _Predictions(probabilities.detach().float(), mask_scores.detach().float(), masks.detach().float(), stuff)


def num_classes_of(outputs) -> int:
    """C, the number of classes of the vocabulary a model output (or precomputed probabilities) was computed with."""
    for name, extra_columns in (("clip_logits", 0), ("class_queries_logits", 1), ("class_probabilities", 1)):
        value = _field(outputs, name)
        if value is not None:
            return value.shape[-1] - extra_columns
    raise ValueError("The model output has no class_queries_logits, clip_logits or class_probabilities.")


def _stuff_labels(predictions: _Predictions, given: Iterable[int] | None) -> set[int]:
    """The stuff label ids given by the caller, else the output's non-thing classes, else none."""
    if given is not None:
        return {int(label) for label in given}
    return predictions.stuff_label_ids or set()


def _size_list(sizes, batch_size: int, name: str) -> list[tuple[int, int]] | None:
    if sizes is None:
        return None
    if isinstance(sizes, torch.Tensor):
        sizes = sizes.tolist()
    sizes = [tuple(int(v) for v in size) for size in sizes]
    if len(sizes) != batch_size or any(len(size) != 2 or min(size) <= 0 for size in sizes):
        raise ValueError(f"{name} must hold one positive (height, width) per image ({batch_size}), got {sizes}.")
    return sizes


class _ResizePlan:
    """Takes one image's stride-4 mask logits to the output size, band of rows by band of rows.

    Both composed bilinear matrices are banded (a few taps per output row or column), and both are applied as matrix
    products with only the slice of mask rows or columns an output band or block reads: rows per band of output rows,
    columns per block of `COLUMN_BLOCK` output columns. On CPU this is faster than two `interpolate` calls through the
    S-wide intermediate, and than gathering each output row's taps (a gather, a broadcast multiply and a sum, which
    took 3x longer than the product).
    """

    def __init__(self, mask_size, padded_size, valid_size, target_size, device):
        if not (0 < valid_size[0] <= padded_size and 0 < valid_size[1] <= padded_size):
            raise ValueError(
                f"The resized image size {tuple(valid_size)} does not fit in the padded input of side {padded_size}."
            )
        rows = mask_to_image_matrix(mask_size[0], padded_size, valid_size[0], target_size[0])
        self.rows = rows.to(device=device, dtype=torch.float32)
        # The mask rows output row r reads: its first and one past its last non-zero tap.
        nonzero = rows != 0
        self.row_reads = (nonzero.int().argmax(1), rows.shape[1] - nonzero.flip(1).int().argmax(1))
        # Each block of output columns is the product with the slice of mask columns it reads, not with all of them
        # (9x fewer multiply-adds for 480 x 640 from 256).
        columns = mask_to_image_matrix(mask_size[1], padded_size, valid_size[1], target_size[1]).T
        self.column_blocks = []
        for out_start in range(0, columns.shape[1], COLUMN_BLOCK):
            block = columns[:, out_start : out_start + COLUMN_BLOCK]
            reads = torch.nonzero(block.any(1)).flatten()  # never empty: every output column has bilinear weights
            in_start, in_stop = int(reads[0]), int(reads[-1]) + 1
            self.column_blocks.append(
                (out_start, out_start + block.shape[1], in_start, in_stop,
                 block[in_start:in_stop].to(device=device, dtype=torch.float32).contiguous())
            )
        self.target_size = tuple(target_size)

    def bands(self, logits: torch.Tensor, channels: int = 0) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yields (start, stop, band) with band the (K, stop - start, W) logits of output rows start..stop-1, a new
        tensor each time (the caller may overwrite it).

        `channels` is the size of any per-pixel tensor the caller builds from a band (C classes), so bands stay
        within BAND_ELEMENTS.
        """
        num_masks, _, mask_width = logits.shape
        height, width = self.target_size
        per_row = max(num_masks * max(mask_width, width), width * channels, 1)
        band_rows = max(1, min(height, BAND_ELEMENTS // per_row))
        first_reads, read_stops = self.row_reads
        for start in range(0, height, band_rows):
            stop = min(height, start + band_rows)
            in_start, in_stop = int(first_reads[start:stop].min()), int(read_stops[start:stop].max())
            band = torch.matmul(self.rows[start:stop, in_start:in_stop], logits[:, in_start:in_stop])
            resized = band.new_empty(num_masks, stop - start, width)
            # As (masks * rows, columns) matrices, each block's product is written straight into its columns of the
            # output (a strided `out=`), not computed apart and copied there: that copy took a third of the resize.
            rows_in, rows_out = band.view(-1, mask_width), resized.view(-1, width)
            for out_start, out_stop, in_start, in_stop, matrix in self.column_blocks:
                torch.mm(rows_in[:, in_start:in_stop], matrix, out=rows_out[:, out_start:out_stop])
            yield start, stop, resized


def _plans(mask_logits, padded_size, target_sizes, reshaped_input_sizes) -> list[_ResizePlan]:
    batch_size, _, mask_height, mask_width = mask_logits.shape
    if padded_size is None:
        # Masks are predicted at stride 4 of the padded square input.
        padded_size = 4 * mask_height
    targets = _size_list(target_sizes, batch_size, "target_sizes")
    reshaped = _size_list(reshaped_input_sizes, batch_size, "reshaped_input_sizes")
    plans = []
    for i in range(batch_size):
        if reshaped is not None:
            valid = reshaped[i]
        elif targets is not None:
            # Recompute the size pre-processing resized this image to, with the same rounding.
            valid = longest_edge_resize_shape(*targets[i], padded_size)
        else:
            valid = (padded_size, padded_size)
        target = targets[i] if targets is not None else valid
        plans.append(_ResizePlan((mask_height, mask_width), padded_size, valid, target, mask_logits.device))
    return plans


def _check_thresholds(**values):
    for name, value in values.items():
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}.")


def post_process_panoptic_segmentation(
    outputs,
    threshold: float = 0.0,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: Iterable[int] | None = None,
    target_sizes: Sequence[tuple[int, int]] | torch.Tensor | None = None,
    padded_size: int | None = None,
    reshaped_input_sizes: Sequence[tuple[int, int]] | torch.Tensor | None = None,
    ensemble_mode: str | None = None,
    seen_classes: torch.BoolTensor | None = None,
    config: PosSamConfig | None = None,
) -> list[dict]:
    """Panoptic segmentation: each pixel belongs to at most one segment; stuff segments of a class are merged.

    A query k is kept when its label (argmax over the C + 1 columns) is not void and its score
    `max_c<C p[k, c] * mask_scores[k]` exceeds `threshold`. Each pixel goes to the kept query maximizing
    `score_k * sigmoid(mask_k)`, if that mask's probability there is >= `mask_threshold` (otherwise the pixel is void).
    A query's segment is dropped when the area it keeps is less than `overlap_mask_area_threshold` times the area of
    its own mask (sigmoid >= `mask_threshold`, not weighted by any score). Kept queries of the same stuff class are
    merged into one segment. Segments are numbered 1..N by decreasing score; 0 is void.

    Args:
        outputs ([`PosSamOutput`] or dict): the model output (train or eval mode), see the module docstring.
        threshold: minimum query score. 0 keeps every non-void query, as FC-CLIP does (the IoU already ranks them).
        mask_threshold: probability above which a pixel belongs to a mask.
        overlap_mask_area_threshold: minimum fraction of its own mask a segment must keep.
        label_ids_to_fuse: stuff classes to merge per class; `None` takes the non-thing classes of
            `outputs.vocabulary_is_thing` when present, else merges nothing.
        target_sizes: (height, width) per image, the original image sizes; `None` returns the resized image size
            (or the padded input when `reshaped_input_sizes` is also `None`).
        padded_size: S, the side of the padded model input; `None` takes 4x the mask size.
        reshaped_input_sizes: (height, width) of each image after resizing, before padding; `None` recomputes it from
            `target_sizes` exactly as pre-processing resized.
        ensemble_mode: the class ensemble, `"mase"`, `"geometric"`, `"ldp_only"` or `"clip_only"`; `None` takes
            `config.ensemble_mode`.
        seen_classes: `(C,)` bool flags of the classes seen in training, needed by `"geometric"`.
        config: the model's `PosSamConfig` (ensemble mode, alpha, beta, MASE thresholds, IoU exponent); `None` takes
            `PosSamConfig`'s defaults.

    Returns:
        One dict per image: `segmentation` (H, W) int32 tensor of segment ids, and `segments_info`, a list of
        `{"id", "label_id", "was_fused", "score"}` (`was_fused`: the class is fused per class, as in transformers).
    """
    _check_thresholds(mask_threshold=mask_threshold, overlap_mask_area_threshold=overlap_mask_area_threshold)
    predictions = read_predictions(outputs, config, ensemble_mode, seen_classes)
    stuff = _stuff_labels(predictions, label_ids_to_fuse)
    plans = _plans(predictions.mask_logits, padded_size, target_sizes, reshaped_input_sizes)
    return [
        _panoptic_one_image(
            predictions.class_probabilities[i],
            predictions.mask_scores[i],
            predictions.mask_logits[i],
            plans[i],
            stuff,
            threshold,
            mask_threshold,
            overlap_mask_area_threshold,
        )
        for i in range(len(plans))
    ]


def _panoptic_one_image(probabilities, mask_scores, mask_logits, plan, stuff, threshold, mask_threshold, overlap):
    num_classes = probabilities.shape[-1] - 1
    class_scores, class_ids = probabilities[:, :num_classes].max(-1)
    scores = class_scores * mask_scores
    keep = (probabilities.argmax(-1) != num_classes) & (scores > threshold)
    kept = torch.nonzero(keep).flatten()
    # Decreasing score fixes segment ids and argmax ties independently of the order of the queries.
    kept = kept[torch.argsort(scores[kept], descending=True, stable=True)]
    height, width = plan.target_size
    device = mask_logits.device
    if kept.numel() == 0:
        return {"segmentation": torch.zeros((height, width), dtype=torch.int32, device=device), "segments_info": []}

    kept_scores = scores[kept]
    query_map = torch.empty((height, width), dtype=torch.int64, device=device)
    own_area = torch.zeros(kept.numel(), dtype=torch.int64, device=device)
    kept_area = torch.zeros(kept.numel(), dtype=torch.int64, device=device)
    for start, stop, band in plan.bands(mask_logits[kept]):
        probs = band.sigmoid_()
        weighted = probs * kept_scores[:, None, None]
        best = weighted.max(0).indices  # argmax(0)'s values (first maximum, NaN wins), in less than half its time
        best_prob = probs.gather(0, best[None])[0]
        assigned = torch.where(best_prob >= mask_threshold, best, -1)
        # Counted as float32 in the spent `weighted` buffer: summing a bool tensor first copies it to int64, which took
        # longer than the rest of the loop. Exact: a band holds far fewer than 2**24 pixels per mask.
        own_area += torch.ge(probs, mask_threshold, out=weighted).flatten(1).sum(1).long()
        kept_area += torch.bincount(assigned[assigned >= 0], minlength=kept.numel())
        query_map[start:stop] = assigned

    ratio = kept_area.double() / own_area.clamp(min=1).double()
    valid = ((own_area > 0) & (kept_area > 0) & (ratio >= overlap)).tolist()
    # Index 0 of the lookup is for void pixels (query_map == -1).
    lookup = torch.zeros(kept.numel() + 1, dtype=torch.int32, device=device)
    segments, stuff_segment = [], {}
    for position in range(kept.numel()):
        if not valid[position]:
            continue
        label = int(class_ids[kept[position]])
        if label in stuff and label in stuff_segment:
            lookup[position + 1] = stuff_segment[label]
            continue
        segment_id = len(segments) + 1
        segments.append(
            {"id": segment_id, "label_id": label, "was_fused": label in stuff, "score": float(kept_scores[position])}
        )
        if label in stuff:
            stuff_segment[label] = segment_id
        lookup[position + 1] = segment_id
    return {"segmentation": lookup[query_map + 1], "segments_info": segments}


def post_process_instance_segmentation(
    outputs,
    threshold: float = 0.0,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float | None = None,
    target_sizes: Sequence[tuple[int, int]] | torch.Tensor | None = None,
    return_binary_maps: bool = False,
    top_k: int = 100,
    stuff_label_ids: Iterable[int] | None = None,
    padded_size: int | None = None,
    reshaped_input_sizes: Sequence[tuple[int, int]] | torch.Tensor | None = None,
    ensemble_mode: str | None = None,
    seen_classes: torch.BoolTensor | None = None,
    config: PosSamConfig | None = None,
) -> list[dict]:
    """Instance segmentation: the `top_k` best (query, class) pairs, which may overlap.

    The pairs are the `top_k` largest `p[k, c]` over K x C; each pair's score is
    `p[k, c] * mean(sigmoid(mask_k) inside its binary mask) * mask_scores[k]`, its mask `sigmoid(mask_k) >=
    mask_threshold` at the output size. Pairs of stuff classes are dropped after the top-k (FC-CLIP keeps only things
    for mask AP), as are empty masks and scores not above `threshold`. Instances are numbered 1..N by decreasing score.

    Args:
        outputs, mask_threshold, target_sizes, padded_size, reshaped_input_sizes, ensemble_mode, seen_classes,
            config: as in [`post_process_panoptic_segmentation`].
        threshold: minimum instance score.
        overlap_mask_area_threshold: not used (instances may overlap); accepted because transformers'
            `image-segmentation` pipeline passes it to every post-processing method.
        return_binary_maps: return the (N, H, W) bool masks instead of one id map.
        top_k: number of (query, class) pairs considered (100 as FC-CLIP for COCO).
        stuff_label_ids: classes without instances; `None` takes the non-thing classes of
            `outputs.vocabulary_is_thing` when present, else none.

    Returns:
        One dict per image: `segmentation`, an (H, W) int32 map where each pixel holds the id of the best-scoring
        instance covering it (0 elsewhere), or with `return_binary_maps` the (N, H, W) bool masks in id order; and
        `segments_info`, a list of `{"id", "label_id", "was_fused": False, "score"}`.
    """
    _check_thresholds(mask_threshold=mask_threshold)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    predictions = read_predictions(outputs, config, ensemble_mode, seen_classes)
    excluded = _stuff_labels(predictions, stuff_label_ids)
    plans = _plans(predictions.mask_logits, padded_size, target_sizes, reshaped_input_sizes)
    return [
        _instance_one_image(
            predictions.class_probabilities[i],
            predictions.mask_scores[i],
            predictions.mask_logits[i],
            plans[i],
            excluded,
            top_k,
            threshold,
            mask_threshold,
            return_binary_maps,
        )
        for i in range(len(plans))
    ]


def _instance_one_image(
    probabilities, mask_scores, mask_logits, plan, excluded, top_k, threshold, mask_threshold, binary
):
    num_classes = probabilities.shape[-1] - 1
    device = mask_logits.device
    height, width = plan.target_size
    pair_probs, pair_index = (
        probabilities[:, :num_classes].flatten().topk(min(top_k, probabilities.shape[0] * num_classes))
    )
    queries, labels = pair_index // num_classes, pair_index % num_classes
    if excluded:
        is_thing = ~torch.isin(labels, torch.tensor(sorted(excluded), device=device))
        pair_probs, queries, labels = pair_probs[is_thing], queries[is_thing], labels[is_thing]

    # A query can appear with several classes: compute each distinct mask once.
    unique_queries, pair_to_mask = torch.unique(queries, return_inverse=True)
    masks = torch.zeros((unique_queries.numel(), height, width), dtype=torch.bool, device=device)
    prob_sum = torch.zeros(unique_queries.numel(), dtype=torch.float64, device=device)
    for start, stop, band in plan.bands(mask_logits[unique_queries]):
        probs = band.sigmoid()
        inside = probs >= mask_threshold
        masks[:, start:stop] = inside
        prob_sum += (probs * inside).flatten(1).sum(1, dtype=torch.float64)
    area = masks.flatten(1).sum(1)
    mean_prob = (prob_sum / area.clamp(min=1)).float()
    scores = pair_probs * mean_prob[pair_to_mask] * mask_scores[queries]
    keep = torch.nonzero((area[pair_to_mask] > 0) & (scores > threshold)).flatten()
    keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]

    segments = [
        {"id": n + 1, "label_id": int(labels[pair]), "was_fused": False, "score": float(scores[pair])}
        for n, pair in enumerate(keep.tolist())
    ]
    instance_masks = masks[pair_to_mask[keep]]
    if binary:
        return {"segmentation": instance_masks, "segments_info": segments}
    segmentation = torch.zeros((height, width), dtype=torch.int32, device=device)
    if keep.numel():
        covered = instance_masks.any(0)
        # Instances are sorted by score, so the first mask covering a pixel is the best one there.
        first = instance_masks.to(torch.uint8).argmax(0).to(torch.int32) + 1
        segmentation = torch.where(covered, first, segmentation)
    return {"segmentation": segmentation, "segments_info": segments}


def post_process_semantic_segmentation(
    outputs,
    target_sizes: Sequence[tuple[int, int]] | torch.Tensor | None = None,
    padded_size: int | None = None,
    reshaped_input_sizes: Sequence[tuple[int, int]] | torch.Tensor | None = None,
    ensemble_mode: str | None = None,
    seen_classes: torch.BoolTensor | None = None,
    config: PosSamConfig | None = None,
) -> list[torch.Tensor]:
    """Semantic segmentation: each pixel takes `argmax_c sum_k p[k, c] * sigmoid(mask_k)` over the C classes.

    Args: as in [`post_process_panoptic_segmentation`].

    Returns:
        One (H, W) int64 tensor of label ids (0..C-1) per image.
    """
    predictions = read_predictions(outputs, config, ensemble_mode, seen_classes)
    plans = _plans(predictions.mask_logits, padded_size, target_sizes, reshaped_input_sizes)
    results = []
    for i, plan in enumerate(plans):
        class_probs = predictions.class_probabilities[i, :, : predictions.num_classes]
        semantic = torch.empty(plan.target_size, dtype=torch.int64, device=class_probs.device)
        for start, stop, band in plan.bands(predictions.mask_logits[i], channels=predictions.num_classes):
            semantic[start:stop] = torch.einsum("kc,khw->chw", class_probs, band.sigmoid()).max(0).indices
        results.append(semantic)
    return results


def post_process_prompt_segmentation(
    outputs,
    labels: Sequence[str],
    mask_threshold: float = 0.0,
    target_sizes=None,
    padded_size: int | None = None,
    reshaped_input_sizes=None,
    ensemble_mode: str | None = None,
    seen_classes: torch.BoolTensor | None = None,
    config: PosSamConfig | None = None,
) -> list[list[dict]]:
    """One named mask per prompt from a [`PosSamPromptOutput`] (`PosSamModel.segment_prompts`).

    Each candidate mask's class probabilities come from the class ensemble of panoptic post-processing (`mase.py`),
    with SAM's predicted IoU as the mask's IoU. Of a prompt's candidate masks (three with `multimask_output=True`) the
    one SAM rates best (highest predicted IoU) is kept, as SAM's demos do; its logits go back to the image like
    panoptic masks do (bilinear to S x S, crop the padding, bilinear to the target size) and are thresholded at
    `mask_threshold` (logits, 0 as in SAM).

    Args:
        outputs: `pred_masks` (B, P, M, h, w), `iou_scores` (B, P, M), `class_queries_logits` (B, P, M, C + 1) and
            `clip_logits` (B, P, M, C).
        labels: the C class labels of the vocabulary the prompts were classified with.
        target_sizes, padded_size, reshaped_input_sizes, ensemble_mode, seen_classes, config: as for panoptic
            post-processing.

    Returns:
        Per image, per prompt: `{"mask": (H, W) bool, "label_id", "label", "score", "iou_score", "mask_index"}`;
        `score` is the label's ensembled class probability, `iou_score` SAM's predicted IoU of the mask.
    """
    fields = {name: _field(outputs, name) for name in ("pred_masks", "iou_scores", "class_queries_logits", "clip_logits")}
    missing = [name for name, value in fields.items() if value is None]
    if missing:
        raise ValueError(f"Prompt post-processing needs {missing} (the output of PosSamModel.segment_prompts).")
    masks, iou_scores, class_logits, clip_logits = fields.values()
    if masks.ndim != 5 or tuple(iou_scores.shape) != tuple(masks.shape[:3]) or clip_logits.shape[:3] != masks.shape[:3]:
        raise ValueError(
            "Expected pred_masks (B, P, M, h, w), iou_scores (B, P, M) and clip_logits (B, P, M, C), got "
            f"{tuple(masks.shape)}, {tuple(iou_scores.shape)} and {tuple(clip_logits.shape)}."
        )
    if clip_logits.shape[-1] != len(labels):
        raise ValueError(
            f"The output has {clip_logits.shape[-1]} classes but {len(labels)} labels were given; post-process with "
            "the vocabulary the prompts were classified with."
        )
    batch_size, num_prompts, num_masks = iou_scores.shape
    probabilities, _ = ensemble_scores(
        class_logits.detach().flatten(1, 2),
        clip_logits.detach().flatten(1, 2),
        iou_scores.detach().float().clamp(0, 1).flatten(1),
        config,
        ensemble_mode,
        seen_classes,
    )
    probabilities = probabilities.view(batch_size, num_prompts, num_masks, -1)
    best = iou_scores.float().argmax(dim=-1)  # (B, P)
    chosen = masks.detach().float().gather(2, best[:, :, None, None, None].expand(-1, -1, 1, *masks.shape[-2:]))[:, :, 0]
    chosen_probabilities = probabilities.gather(2, best[:, :, None, None].expand(-1, -1, 1, probabilities.shape[-1]))
    scores, label_ids = chosen_probabilities[:, :, 0, :-1].max(dim=-1)
    results = []
    for index, plan in enumerate(_plans(chosen, padded_size, target_sizes, reshaped_input_sizes)):
        full = torch.empty((num_prompts, *plan.target_size), dtype=torch.bool, device=chosen.device)
        for start, stop, band in plan.bands(chosen[index]):
            full[:, start:stop] = band > mask_threshold
        results.append(
            [
                {
                    "mask": full[prompt],
                    "label_id": int(label_ids[index, prompt]),
                    "label": labels[int(label_ids[index, prompt])],
                    "score": float(scores[index, prompt]),
                    "iou_score": float(iou_scores[index, prompt, best[index, prompt]]),
                    "mask_index": int(best[index, prompt]),
                }
                for prompt in range(num_prompts)
            ]
        )
    return results
