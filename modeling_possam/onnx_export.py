"""ONNX export of PosSAM's image path: pixels and a vocabulary's text embeddings in, raw predictions out.

What is exported ([`PosSamOnnxImagePath`]): the SAM and CLIP image towers, the feature pyramid, Mask2Former's pixel
decoder and masked-attention decoder, the IoU head, LDP and both classifiers, for any batch size and any number of
class names. What is not: the CLIP text tower and the tokenizer (a vocabulary is embedded once in PyTorch,
`model.get_text_embeddings(...)`, and can be saved with `PosSamTextEmbeddings.save`), training and its losses, the
intermediate (auxiliary) predictions, and everything after the raw logits: the class ensemble (MASE) and the
panoptic / instance / semantic post-processing, which run in Python on ONNX Runtime's outputs.

    from possam.onnx_export import export_onnx
    export_onnx(model, "possam.onnx")                      # needs `pip install possam[onnx]`

The graph's inputs are `pixel_values` (batch, 3, S, S) from [`PosSamImageProcessor`], `synonym_embeddings`
(num_synonyms, D) and `synonym_to_class` (num_synonyms,) int64 from [`PosSamTextEmbeddings`]; its outputs
`class_queries_logits` (batch, K, C + 1), `clip_logits` (batch, K, C), `iou_scores` (batch, K) and
`masks_queries_logits` (batch, K, S / 4, S / 4), the fields of [`PosSamOutput`] with the same names. The vocabulary
is not validated inside the graph: give it as `PosSamTextEmbeddings` holds it (every class 0..C-1 named).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .modeling_possam import PosSamModel


INPUT_NAMES = ("pixel_values", "synonym_embeddings", "synonym_to_class")
OUTPUT_NAMES = ("class_queries_logits", "clip_logits", "iou_scores", "masks_queries_logits")
# Named dynamic axes of each output.
OUTPUT_AXES = ({0: "batch", 2: "num_classes_plus_void"}, {0: "batch", 2: "num_classes"}, {0: "batch"}, {0: "batch"})
DEFAULT_OPSET = 18


class PosSamOnnxImagePath(nn.Module):
    """Tensors-only view of [`PosSamModel`] at inference: `(pixel_values, synonym_embeddings, synonym_to_class)` ->
    `(class_queries_logits, clip_logits, iou_scores, masks_queries_logits)`, the model's own forward, unensembled."""

    def __init__(self, model: PosSamModel):
        super().__init__()
        self.model = model

    def forward(
        self, pixel_values: torch.Tensor, synonym_embeddings: torch.Tensor, synonym_to_class: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.model(
            pixel_values=pixel_values, synonym_embeddings=synonym_embeddings, synonym_to_class=synonym_to_class
        )
        return tuple(outputs[name] for name in OUTPUT_NAMES)


def example_text_embeddings(model: PosSamModel, num_classes: int = 3, names_per_class: int = 2):
    """A vocabulary-shaped example input for tracing (random unit vectors; the graph does not depend on values)."""
    generator = torch.Generator().manual_seed(0)
    dim = model.config.clip_config.projection_dim
    embeddings = nn.functional.normalize(torch.randn(num_classes * names_per_class, dim, generator=generator), dim=-1)
    synonym_to_class = torch.arange(num_classes).repeat_interleave(names_per_class)
    return embeddings, synonym_to_class


def export_onnx(
    model: PosSamModel,
    path: str | os.PathLike,
    batch_size: int = 2,
    opset_version: int = DEFAULT_OPSET,
) -> str:
    """Exports the image path to an ONNX file with `torch.onnx.export(..., dynamo=True)`.

    Args:
        model: a PosSAM model (put in eval mode here); its dtype is kept.
        path: the `.onnx` file to write (weights are stored inside it).
        batch_size: batch of the example input; the exported graph takes any batch size and any vocabulary size.
        opset_version: ONNX opset (18 or newer).

    Returns:
        The path written.
    """
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
        from onnxscript import ir
    except ImportError:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install 'possam[onnx]'.") from None
    model.eval()
    size = model.config.image_size
    pixel_values = torch.randn(batch_size, 3, size, size, dtype=model.dtype)
    synonym_embeddings, synonym_to_class = example_text_embeddings(model)
    batch = torch.export.Dim("batch", min=1)
    synonyms = torch.export.Dim("num_synonyms", min=1)
    with torch.no_grad():
        program = torch.onnx.export(
            PosSamOnnxImagePath(model).eval(),
            (pixel_values, synonym_embeddings.to(model.dtype), synonym_to_class),
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: batch}, {0: synonyms}, {0: synonyms}),
            opset_version=opset_version,
            external_data=False,
            verbose=False,
        )
    # The class count is computed in the graph (max of synonym_to_class + 1); name those output axes readably.
    for output, axes in zip(program.model.graph.outputs, OUTPUT_AXES):
        output.shape = ir.Shape([axes.get(index, dim) for index, dim in enumerate(output.shape)])
    program.save(os.fspath(path))
    return os.fspath(path)


__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "PosSamOnnxImagePath", "export_onnx"]
