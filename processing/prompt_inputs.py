"""Point and box prompts: from the user's image coordinates to the padded model input's, as tensors.

Users give prompts in pixels of their original image; the model works on the image resized so its longest side is S
and padded bottom/right. A coordinate is therefore scaled per axis by (resized / original) size, as Meta's
`ResizeLongestSide.apply_coords` does. Layouts follow transformers' `SamProcessor`, one level per batch dimension:

- `input_points`: per image, per prompt, a list of (x, y) points; prompts with fewer points are padded with label -10
  (ignored by SAM's prompt encoder);
- `input_labels`: the same nesting without the coordinates: 1 foreground, 0 background (default: all 1);
- `input_boxes`: per image, per prompt, one (x0, y0, x1, y1) box.

Every image of a batch needs the same number of prompts (the model runs them as one tensor).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


PADDING_LABEL = -10


def _per_image(name: str, value, batch_size: int) -> list:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != batch_size:
        raise ValueError(f"{name} must hold one list of prompts per image ({batch_size}), got {value!r}.")
    counts = {len(prompts) for prompts in value}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"{name}: every image needs the same, non-zero number of prompts, got {sorted(counts)}.")
    return list(value)


def _number_list(value, length: int, where: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise ValueError(f"{where} must be {length} numbers, got {value!r}.")
    try:
        return [float(number) for number in value]
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be {length} numbers, got {value!r}.") from None


def prepare_prompts(
    original_sizes: torch.Tensor,
    reshaped_input_sizes: torch.Tensor,
    input_points: Sequence | None = None,
    input_labels: Sequence | None = None,
    input_boxes: Sequence | None = None,
) -> dict[str, torch.Tensor]:
    """Prompts in original-image pixels -> `input_points` (B, P, N, 2), `input_labels` (B, P, N) and/or
    `input_boxes` (B, P, 4) in pixels of the padded model input (see the module docstring for the layouts).

    Args:
        original_sizes, reshaped_input_sizes: `(B, 2)` (height, width) of each image before and after resizing, as
            the image processor returns them.
    """
    batch_size = len(original_sizes)
    scales = [
        (float(new_w) / float(old_w), float(new_h) / float(old_h))
        for (old_h, old_w), (new_h, new_w) in zip(original_sizes.tolist(), reshaped_input_sizes.tolist())
    ]
    result = {}
    if input_points is not None:
        images = _per_image("input_points", input_points, batch_size)
        labels = None if input_labels is None else _per_image("input_labels", input_labels, batch_size)
        num_points = max(len(points) for prompts in images for points in prompts)
        coordinates = torch.zeros(batch_size, len(images[0]), num_points, 2)
        point_labels = torch.full((batch_size, len(images[0]), num_points), PADDING_LABEL, dtype=torch.int64)
        for b, prompts in enumerate(images):
            for p, points in enumerate(prompts):
                where = f"input_points[{b}][{p}]"
                if not isinstance(points, (list, tuple)) or not points:
                    raise ValueError(f"{where} must be a non-empty list of (x, y) points, got {points!r}.")
                given = [1] * len(points) if labels is None else labels[b][p]
                if not isinstance(given, (list, tuple)) or len(given) != len(points) or any(
                    label not in (0, 1) for label in given
                ):
                    raise ValueError(
                        f"input_labels[{b}][{p}] must hold one label (1 foreground, 0 background) per point of "
                        f"{where} ({len(points)}), got {given!r}."
                    )
                for n, point in enumerate(points):
                    x, y = _number_list(point, 2, f"{where}[{n}]")
                    coordinates[b, p, n] = torch.tensor([x * scales[b][0], y * scales[b][1]])
                point_labels[b, p, : len(points)] = torch.tensor(given)
        result.update(input_points=coordinates, input_labels=point_labels)
    elif input_labels is not None:
        raise ValueError("input_labels were given without input_points.")
    if input_boxes is not None:
        images = _per_image("input_boxes", input_boxes, batch_size)
        boxes = torch.zeros(batch_size, len(images[0]), 4)
        for b, prompts in enumerate(images):
            for p, box in enumerate(prompts):
                x0, y0, x1, y1 = _number_list(box, 4, f"input_boxes[{b}][{p}]")
                if x1 < x0 or y1 < y0:
                    raise ValueError(f"input_boxes[{b}][{p}] must be (x0, y0, x1, y1) with x0 <= x1, y0 <= y1, got {box!r}.")
                sx, sy = scales[b]
                boxes[b, p] = torch.tensor([x0 * sx, y0 * sy, x1 * sx, y1 * sy])
        result["input_boxes"] = boxes
    return result
