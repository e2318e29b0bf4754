"""Panoptic quality (PQ, SQ, RQ for all classes, things and stuff) as a local `evaluate` metric.

Load it offline with `evaluate.load(possam.training.metric_panoptic_quality.EVALUATE_METRIC_DIR)`. The numbers are
those of COCO's official panopticapi `pq_compute`, computed by `possam.training.metric_panoptic_quality`.
"""

import datasets
import evaluate
from possam.training.metric_panoptic_quality import PanopticQualityAccumulator


_DESCRIPTION = """
Panoptic quality of Kirillov et al. (2019) with exactly the semantics of COCO's panopticapi `pq_compute`: a match
needs IoU > 0.5, predicted pixels on ground-truth void (id 0) leave the union, crowd regions neither match nor count
the predictions lying mostly on them, statistics are summed per class over the dataset and averaged over the classes
that occur. Scores are in percent.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of (H, W) `list`s of `int`): predicted segment-id maps, 0 = no segment.
    references (`list` of (H, W) `list`s of `int`): ground-truth segment-id maps, 0 = void.
    prediction_segments_info (`list` of `list` of `dict`): per image, `{"id", "label_id"}` of each predicted segment.
    reference_segments_info (`list` of `list` of `dict`): per image, `{"id", "label_id", "iscrowd"}` of each
        ground-truth segment.
    is_thing (`list` of `bool`): per label id, whether the class is a thing (else stuff).
    is_seen (`list` of `bool`, *optional*): per label id, whether the class was seen in training.
Returns:
    `pq`, `sq`, `rq`, `pq_things`, `sq_things`, `rq_things`, `pq_stuff`, `sq_stuff`, `rq_stuff` (percent; NaN for a
    group without any occurring class), `n`, `n_things`, `n_stuff` (classes averaged), the same with `_seen` and
    `_unseen` when `is_seen` is given, and `per_class_pq` (percent, per label id).
Examples:
    >>> metric = evaluate.load(EVALUATE_METRIC_DIR)
    >>> metric.compute(predictions=[[[1, 1], [0, 2]]], references=[[[1, 1], [0, 2]]],
    ...     prediction_segments_info=[[{"id": 1, "label_id": 0}, {"id": 2, "label_id": 1}]],
    ...     reference_segments_info=[[{"id": 1, "label_id": 0, "iscrowd": 0}, {"id": 2, "label_id": 1, "iscrowd": 0}]],
    ...     is_thing=[True, False])["pq"]
    100.0
"""

_CITATION = """
@inproceedings{kirillov2019panoptic,
  title={Panoptic Segmentation},
  author={Kirillov, Alexander and He, Kaiming and Girshick, Ross and Rother, Carsten and Doll{\\'a}r, Piotr},
  booktitle={CVPR},
  year={2019}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PanopticQuality(evaluate.Metric):
    def _info(self):
        segment_map = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": segment_map,
                    "references": segment_map,
                    # Lists of structs (a Python list here, not `datasets.Sequence`, which would turn a list of
                    # dicts into a dict of lists).
                    "prediction_segments_info": [{"id": datasets.Value("int64"), "label_id": datasets.Value("int64")}],
                    "reference_segments_info": [
                        {
                            "id": datasets.Value("int64"),
                            "label_id": datasets.Value("int64"),
                            "iscrowd": datasets.Value("int64"),
                        }
                    ],
                }
            ),
            reference_urls=["https://github.com/cocodataset/panopticapi"],
        )

    def _compute(
        self, predictions, references, prediction_segments_info, reference_segments_info, is_thing=None, is_seen=None
    ):
        if is_thing is None:
            raise ValueError("Pass is_thing=[...] (one bool per label id) to compute().")
        accumulator = PanopticQualityAccumulator(is_thing, is_seen)
        for prediction, reference, prediction_info, reference_info in zip(
            predictions, references, prediction_segments_info, reference_segments_info
        ):
            accumulator.update(reference, reference_info, prediction, prediction_info)
        result = accumulator.compute()
        metrics = {}
        for suffix, scores in result.groups():
            metrics[f"pq{suffix}"] = 100.0 * scores.pq
            metrics[f"sq{suffix}"] = 100.0 * scores.sq
            metrics[f"rq{suffix}"] = 100.0 * scores.rq
            metrics[f"n{suffix}"] = scores.n
        metrics["per_class_pq"] = [100.0 * scores.pq for scores in result.per_class]
        return metrics
