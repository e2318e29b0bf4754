"""PosSAM's training loss: Mask2Former's set prediction loss over an open vocabulary, plus the IoU head's loss.

Per image and per decoder prediction, queries are matched one-to-one to ground-truth segments by transformers'
Hungarian matcher (cost = class + point-sampled BCE + Dice). Matched queries get the point-sampled mask losses;
every query gets the cross-entropy (unmatched ones towards void); every query's IoU head is regressed towards the IoU
its binarized mask actually has with its matched segment (0 when unmatched, or no loss, `iou_target_unmatched`).

Three departures from `Mask2FormerLoss`, the class this reuses:
- the number of classes is read from each batch's logits, not fixed at construction: the vocabulary is an input;
- pixels outside `valid_mask` (padding, crowd regions, unlabeled void) are excluded from the mask losses and from the
  IoU targets, instead of being taught as background of every mask;
- every loss is normalized by a count averaged over the processes of a distributed run (number of masks, sum of
  class weights, number of IoU targets), so that training on N processes optimizes the same objective as one process
  with the same global batch. (transformers' `get_num_masks` averages the mask count with accelerate's `reduce`,
  which already means, and then divides by the world size again, scaling the mask losses by the process count.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerHungarianMatcher,
    Mask2FormerLoss,
    sample_point,
)

from .configuration import PosSamConfig
from .decoder import mask_logits


LOSS_NAMES = ("loss_cross_entropy", "loss_mask", "loss_dice", "loss_iou")


def average_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of a per-process count over the processes of a distributed run; the value itself otherwise."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def loss_name(key: str) -> str:
    """`"loss_dice_3"` (auxiliary prediction 3) -> `"loss_dice"`."""
    return key if key in LOSS_NAMES else key.rsplit("_", 1)[0]


def weighted_point_bce(point_logits: torch.Tensor, point_labels: torch.Tensor, point_weights: torch.Tensor) -> torch.Tensor:
    """Per-mask mean sigmoid BCE over the weighted points -> `(num_masks,)`."""
    loss = nn.functional.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none")
    return (loss * point_weights).sum(-1) / point_weights.sum(-1).clamp(min=1.0)


def weighted_point_dice(point_logits: torch.Tensor, point_labels: torch.Tensor, point_weights: torch.Tensor) -> torch.Tensor:
    """Per-mask Dice loss `1 - (2|p.y| + 1) / (|p| + |y| + 1)` over the weighted points -> `(num_masks,)`."""
    probabilities = point_logits.sigmoid() * point_weights
    labels = point_labels * point_weights
    numerator = 2 * (probabilities * labels).sum(-1)
    denominator = probabilities.sum(-1) + labels.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def matched_mask_logits(
    mask_embeddings: torch.Tensor, mask_features: torch.Tensor, image_index: torch.Tensor
) -> torch.Tensor:
    """Full-resolution mask logits of the `N` matched queries only, from their embeddings and their images' features.

    Args:
        mask_embeddings: `(N, C)` the matched queries' mask embeddings, N >= 1.
        mask_features: `(batch, C, h, w)` the per-pixel embeddings.
        image_index: `(N,)` each query's image, in non-decreasing order.

    Returns:
        `(N, h, w)` mask logits, the same rows as `mask_logits` of all queries.
    """
    images, counts = torch.unique_consecutive(image_index, return_counts=True)
    return torch.cat(
        [
            mask_logits(embeddings[None], mask_features[image : image + 1])[0]
            for image, embeddings in zip(images.tolist(), mask_embeddings.split(counts.tolist()))
        ]
    )


class PosSamLoss(Mask2FormerLoss):
    """Losses of every decoder prediction; see the module docstring. Holds no parameters or buffers."""

    def __init__(self, config: PosSamConfig):
        # Mask2FormerLoss.__init__ registers a class-weight buffer sized by `config.num_labels`; an open vocabulary
        # has no fixed class count, so that buffer is built per batch in `loss_labels` instead.
        nn.Module.__init__(self)
        self.void_weight = config.no_object_weight
        self.num_points = config.train_num_points
        self.oversample_ratio = config.oversample_ratio
        self.importance_sample_ratio = config.importance_sample_ratio
        self.iou_target_unmatched = config.iou_target_unmatched
        self.weight_dict = {
            "loss_cross_entropy": config.class_weight,
            "loss_mask": config.mask_weight,
            "loss_dice": config.dice_weight,
            "loss_iou": config.iou_loss_weight,
        }
        self.matcher = Mask2FormerHungarianMatcher(
            cost_class=config.class_weight,
            cost_mask=config.mask_weight,
            cost_dice=config.dice_weight,
            num_points=config.train_num_points,
        )

    def loss_labels(self, class_queries_logits, class_labels, indices):
        """Cross-entropy over the batch's C + 1 classes; unmatched queries target void (weight `void_weight`)."""
        batch_size, num_queries, num_columns = class_queries_logits.shape
        weight = class_queries_logits.new_ones(num_columns)
        weight[-1] = self.void_weight
        targets = torch.full(
            (batch_size, num_queries), num_columns - 1, dtype=torch.long, device=class_queries_logits.device
        )
        targets[self._get_predictions_permutation_indices(indices)] = torch.cat(
            [labels[target] for labels, (_, target) in zip(class_labels, indices)]
        )
        # The weighted mean of cross_entropy(weight=...), with its denominator (the sum of the targets' weights)
        # averaged over processes.
        losses = nn.functional.cross_entropy(class_queries_logits.transpose(1, 2), targets, reduction="none")
        target_weights = weight[targets]
        normalizer = average_over_processes(target_weights.sum()).clamp(min=1e-6)
        return {"loss_cross_entropy": (losses * target_weights).sum() / normalizer}

    def loss_masks(
        self, masks_queries_logits, padded_mask_labels, indices, num_masks, valid_mask=None, mask_embeddings=None,
        mask_features=None,
    ):
        """Point-sampled BCE and Dice of matched masks; points outside `valid_mask` do not count.

        `padded_mask_labels` is `(batch, max_segments, H, W)`: every image's masks, zero-padded to the batch's largest
        segment count (padded once per batch, not once per prediction). With the prediction's `mask_embeddings`
        `(batch, K, C)` and the `mask_features` `(batch, C, h, w)` the masks were made of, the matched masks (the only
        way the mask losses reach the model) are recomputed from them ([`matched_mask_logits`]): the same values, and
        the backward pass goes through an `N x C x h x w` product for the N matched queries instead of the
        `K x C x h x w` product of all K queries (for PosSAM-B, 10 segments instead of 250 queries, ten times per step).
        """
        prediction_index = self._get_predictions_permutation_indices(indices)
        target_index = self._get_targets_permutation_indices(indices)
        if mask_embeddings is None or len(target_index[0]) == 0:
            predicted = masks_queries_logits[prediction_index].unsqueeze(1)
        else:
            predicted = matched_mask_logits(mask_embeddings[prediction_index], mask_features, prediction_index[0])[:, None]
        targets = padded_mask_labels[target_index].unsqueeze(1).to(predicted.dtype)

        with torch.no_grad():
            points = self.sample_points_using_uncertainty(
                predicted, self.calculate_uncertainty, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            point_labels = sample_point(targets, points, align_corners=False).squeeze(1)
            if valid_mask is None:
                point_weights = torch.ones_like(point_labels)
            else:
                valid = valid_mask[target_index[0]].unsqueeze(1).to(predicted.dtype)
                point_weights = (sample_point(valid, points, align_corners=False).squeeze(1) >= 0.5).to(predicted.dtype)
        point_logits = sample_point(predicted, points, align_corners=False).squeeze(1)
        return {
            "loss_mask": weighted_point_bce(point_logits, point_labels, point_weights).sum() / num_masks,
            "loss_dice": weighted_point_dice(point_logits, point_labels, point_weights).sum() / num_masks,
        }

    @staticmethod
    @torch.no_grad()
    def at_mask_resolution(mask_labels, valid_mask, size):
        """Ground truth for the IoU targets at the predicted masks' resolution (area-downsampled, then >= 0.5).

        Returns a list of `(num_segments_i, *size)` boolean masks and a `(batch, *size)` boolean valid mask (or None).
        """
        segments = [
            nn.functional.interpolate(masks[None].float(), size=size, mode="area")[0] >= 0.5 for masks in mask_labels
        ]
        if valid_mask is not None:
            valid_mask = nn.functional.interpolate(valid_mask[:, None].float(), size=size, mode="area")[:, 0] >= 0.5
        return segments, valid_mask

    @torch.no_grad()
    def iou_targets(self, masks_queries_logits, segment_masks, indices, valid_mask=None):
        """IoU of each matched query's binarized mask (logit > 0) with its segment, at mask resolution.

        `segment_masks` and `valid_mask` are `at_mask_resolution`'s output. Returns `(targets, weights)`, both
        `(batch, K)`: unmatched queries target 0, with weight 1 (`"zero"`) or 0 (`"ignore"`).
        """
        targets = masks_queries_logits.new_zeros(masks_queries_logits.shape[:2])
        weights = torch.full_like(targets, 1.0 if self.iou_target_unmatched == "zero" else 0.0)
        for image, (queries, segments) in enumerate(indices):
            if len(queries) == 0:
                continue
            predicted = masks_queries_logits[image, queries] > 0
            ground_truth = segment_masks[image][segments]
            if valid_mask is not None:
                predicted, ground_truth = predicted & valid_mask[image], ground_truth & valid_mask[image]
            intersection = (predicted & ground_truth).flatten(1).sum(-1)
            union = (predicted | ground_truth).flatten(1).sum(-1)
            targets[image, queries] = intersection.float() / union.clamp(min=1).float()
            weights[image, queries] = 1.0
        return targets, weights

    def loss_iou(self, iou_scores, masks_queries_logits, segment_masks, indices, valid_mask=None):
        targets, weights = self.iou_targets(masks_queries_logits, segment_masks, indices, valid_mask)
        squared_error = (iou_scores.float() - targets) ** 2 * weights
        return {"loss_iou": squared_error.sum() / average_over_processes(weights.sum()).clamp(min=1.0)}

    def get_num_masks(self, class_labels: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Ground-truth masks per process, averaged over processes (at least 1): the mask losses' normalizer."""
        count = torch.tensor(float(sum(len(labels) for labels in class_labels)), device=device)
        return average_over_processes(count).clamp(min=1.0)

    def forward(
        self,
        predictions: list[dict[str, torch.Tensor]],
        mask_labels: list[torch.Tensor],
        class_labels: list[torch.Tensor],
        valid_mask: torch.Tensor | None = None,
        mask_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            predictions: one dict per supervised decoder prediction, in decoder order (the last is the final one),
                with `class_queries_logits` `(batch, K, C + 1)`, `masks_queries_logits` `(batch, K, h, w)` and
                `iou_scores` `(batch, K)`, and optionally the `mask_embeddings` `(batch, K, C)` the masks were made of.
            mask_labels: per image, `(num_segments, H, W)` binary masks on the padded input canvas.
            class_labels: per image, `(num_segments,)` class indices into the call's vocabulary.
            valid_mask: `(batch, H, W)`, 1 where pixels are supervised; `None` supervises every pixel.
            mask_features: `(batch, C, h, w)`, with the predictions' `mask_embeddings`: the matched masks are then
                recomputed from them for the mask losses (see `loss_masks`).

        Returns:
            Unweighted losses: `loss_cross_entropy`, `loss_mask`, `loss_dice`, `loss_iou` for the final prediction and
            the same names suffixed `_{i}` for auxiliary prediction `i`.
        """
        num_masks = self.get_num_masks(class_labels, device=predictions[-1]["class_queries_logits"].device)
        # Every prediction is supervised by the same ground truth: prepare it once.
        padded_mask_labels, _ = self._pad_images_to_max_in_batch(mask_labels)
        mask_size = predictions[-1]["masks_queries_logits"].shape[-2:]
        segments_at_mask_size, valid_at_mask_size = self.at_mask_resolution(mask_labels, valid_mask, mask_size)
        losses = {}
        for index, prediction in enumerate(predictions):
            masks = prediction["masks_queries_logits"]
            indices = self.matcher(masks, prediction["class_queries_logits"], mask_labels, class_labels)
            layer_losses = {
                **self.loss_labels(prediction["class_queries_logits"], class_labels, indices),
                **self.loss_masks(
                    masks, padded_mask_labels, indices, num_masks, valid_mask, prediction.get("mask_embeddings"),
                    mask_features,
                ),
                **self.loss_iou(prediction["iou_scores"], masks, segments_at_mask_size, indices, valid_at_mask_size),
            }
            suffix = "" if index == len(predictions) - 1 else f"_{index}"
            losses.update({f"{name}{suffix}": value for name, value in layer_losses.items()})
        return losses

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of `forward`'s losses."""
        return sum(self.weight_dict[loss_name(key)] * value for key, value in losses.items())
