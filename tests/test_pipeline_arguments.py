"""The open-vocab-panoptic pipeline takes its arguments as transformers' zero-shot pipelines do: labels as a list or a
comma-separated string ('|' for synonyms), stuff labels as a string or list, per-image label lists, input dicts,
shipped vocabularies through `vocabulary=`, image URLs, and `pipe([]) == []`."""

from __future__ import annotations

import http.server
import io
import threading

import numpy as np
import pytest
from pipeline_testing import random_image, save_checkpoint, single_thread  # noqa: F401  (autouse fixture)
from transformers import pipeline

from possam import load_vocabulary

HEIGHT, WIDTH = 60, 90


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    folder = save_checkpoint(tmp_path_factory.mktemp("arguments") / "model", store_default_vocabulary=False)
    return pipeline("open-vocab-panoptic", model=folder, device="cpu")


@pytest.fixture(scope="module")
def images():
    return [random_image(HEIGHT, WIDTH, seed=0), random_image(80, 50, seed=1), random_image(64, 64, seed=2)]


def summary(segments) -> list[tuple]:
    """Comparable form of one image's result: label, rounded score, mask bytes."""
    return [(s["label"], round(s["score"], 5), np.asarray(s["mask"]).tobytes()) for s in segments]


def test_label_forms_give_the_same_result(segmenter, images):
    reference = segmenter(images[0], candidate_labels=["cat", "person|child", "grass|lawn"], stuff_labels=["grass"])
    assert reference, "the tiny model must produce segments for this comparison to mean anything"
    for labels, stuff in [
        ("cat,person|child,grass|lawn", "grass"),  # transformers' zero-shot string form, as on the command line
        (" cat , person | child, grass|lawn ", ["grass"]),
        (["cat", "person,child", "grass,lawn"], "grass"),  # the older list-entry form: ',' inside one entry
    ]:
        assert summary(segmenter(images[0], candidate_labels=labels, stuff_labels=stuff)) == summary(reference)
    # A string is a list of classes, not a vocabulary name: "ball,box" is two classes, "sky" one.
    two = segmenter(images[0], candidate_labels="ball,box", return_panoptic_map=True)
    assert {s["label"] for s in two["segments_info"]} <= {"ball", "box"} and two["segments_info"]
    assert {s["label"] for s in segmenter(images[0], candidate_labels="sky")} == {"sky"}


def test_stuff_labels_string_is_not_split_into_letters(segmenter, images):
    stuff = segmenter(images[0], candidate_labels="cat,sky", stuff_labels="sky", return_panoptic_map=True)
    things = segmenter(images[0], candidate_labels="cat,sky", return_panoptic_map=True)
    sky_segments = [s for s in stuff["segments_info"] if s["label"] == "sky"]
    assert len(sky_segments) == 1 and sky_segments[0]["was_fused"]
    assert all(not s["was_fused"] for s in things["segments_info"])
    assert sum(s["label"] == "sky" for s in things["segments_info"]) >= len(sky_segments)


def test_shipped_vocabulary_by_its_own_argument(segmenter, images):
    named = segmenter(images[0], vocabulary="ade20k_150", return_panoptic_map=True)
    loaded = segmenter(images[0], vocabulary=load_vocabulary("ade20k_150"), return_panoptic_map=True)
    ade_labels = set(load_vocabulary("ade20k_150").labels)
    assert named["segments_info"] and {s["label"] for s in named["segments_info"]} <= ade_labels
    assert named["segments_info"] == loaded["segments_info"]
    np.testing.assert_array_equal(named["segmentation"], loaded["segmentation"])


@pytest.mark.parametrize("batch_size", [1, 3])
def test_per_image_label_lists(segmenter, images, batch_size):
    per_image = [["cat", "grass"], ["ball|sphere", "box", "sky"], ["cat", "grass"]]
    stuff = [["grass"], ["sky"], []]
    singles = [
        segmenter(image, candidate_labels=labels, stuff_labels=stuff_labels or None)
        for image, labels, stuff_labels in zip(images, per_image, stuff)
    ]
    batched = segmenter(images, candidate_labels=per_image, stuff_labels=stuff, batch_size=batch_size)
    assert [summary(result) for result in batched] == [summary(result) for result in singles]
    assert {s["label"] for s in batched[1]} <= {"ball", "box", "sky"}
    # The same as input dicts, transformers' zero-shot-object-detection form, and with one shared stuff list.
    dicts = segmenter(
        [
            {"image": image, "candidate_labels": labels, "stuff_labels": stuff_labels}
            for image, labels, stuff_labels in zip(images, per_image, stuff)
        ],
        batch_size=batch_size,
    )
    assert [summary(result) for result in dicts] == [summary(result) for result in singles]
    shared = segmenter(images, candidate_labels=per_image, stuff_labels="grass,sky", batch_size=batch_size)
    assert [summary(result) for result in shared] == [summary(result) for result in singles]


def test_empty_input_and_argument_errors(segmenter, images):
    assert segmenter([]) == []
    assert segmenter([], candidate_labels="cat") == []
    with pytest.raises(ValueError, match="2 per-image label lists, so the input must be a list of as many images"):
        segmenter(images, candidate_labels=[["cat"], ["dog"]])
    with pytest.raises(ValueError, match="one image, not a list"):
        segmenter(images[0], candidate_labels=[["cat"]])
    with pytest.raises(ValueError, match="2 per-image lists for 3 images"):
        segmenter(images, candidate_labels=[["cat"]] * 3, stuff_labels=[["cat"], []])
    with pytest.raises(ValueError, match=r"Stuff label\(s\) \['sky'\] are not among any image's candidate_labels"):
        segmenter(images, candidate_labels=[["cat"]] * 3, stuff_labels="sky")
    with pytest.raises(ValueError, match="needs an 'image'"):
        segmenter([{"picture": images[0]}])
    with pytest.raises(ValueError, match="stuff_labels without candidate_labels"):
        segmenter([{"image": images[0], "stuff_labels": "sky"}])


class _OneImageHandler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self):  # noqa: N802  (http.server's name)
        if self.path != "/image.png":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def image_url(images):
    """An HTTP server on 127.0.0.1 serving images[0] as PNG; it stops after the test."""
    buffer = io.BytesIO()
    images[0].save(buffer, format="PNG")
    handler = type("Handler", (_OneImageHandler,), {"payload": buffer.getvalue()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_image_url(segmenter, images, image_url):
    from_url = segmenter(f"{image_url}/image.png", candidate_labels="cat,grass", timeout=5)
    assert summary(from_url) == summary(segmenter(images[0], candidate_labels="cat,grass"))
    processor = segmenter.processor.image_processor
    by_url = processor(f"{image_url}/image.png", timeout=5)
    np.testing.assert_array_equal(by_url["pixel_values"].numpy(), processor(images[0])["pixel_values"].numpy())
    assert by_url["original_sizes"].tolist() == [[HEIGHT, WIDTH]]
    with pytest.raises(ValueError, match=r"images: cannot read image URL 'http://127\.0\.0\.1:\d+/missing\.png'"):
        processor(f"{image_url}/missing.png", timeout=5)
