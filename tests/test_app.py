"""`possam app`, used as people use it: the command serves a saved tiny PosSAM on a loopback port; a gradio_client
session and a real headless browser (chromium) upload an image, type classes and click, and the answers are checked
against the library's own results for the same inputs."""

from __future__ import annotations

import json
import re

import numpy as np
import PIL.Image
import pytest
import torch
from app_browser import chromium_driver, free_loopback_port, start_app, use_demo
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from transformers import pipeline

from possam import PosSamModel, PosSamProcessor, possam_preset
from possam.processing.app import DemoSession, PosSamDemo, main as app_main
from possam.processing.panoptic_png import rgb_to_segment_ids


LABELS, STUFF = "ball|sphere, box, sky", "sky"
VOCABULARY, STUFF_LABELS = ["ball,sphere", "box", "sky"], ["sky"]
CLICK = (30, 40)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny PosSAM saved with its processor, as `save_pretrained` users have it."""
    folder = tmp_path_factory.mktemp("possam-tiny")
    torch.manual_seed(0)
    model = PosSamModel(possam_preset("tiny")).eval()
    model.save_pretrained(folder)
    PosSamProcessor.for_model_config(model.config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "scene.png"
    # Noise on which this seeded random model finds segments (its void class does not win everywhere).
    pixels = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture(scope="module")
def app_url(model_dir):
    port = free_loopback_port()
    process = start_app(model_dir, port)
    yield f"http://127.0.0.1:{port}/"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def expected(model_dir, image_path, tmp_path_factory):
    """The library's answers for the same image, classes and click (in this process)."""
    demo = PosSamDemo(model_dir)
    session = demo.segment(DemoSession(), np.array(PIL.Image.open(image_path)), LABELS, STUFF, tmp_path_factory.mktemp("out"))
    segmenter = pipeline("open-vocab-panoptic", model=model_dir)
    click = segmenter(image_path, candidate_labels=VOCABULARY, stuff_labels=STUFF_LABELS, points=[CLICK])[0]
    return session, click


def test_gradio_client_session_segments_and_names_a_click(app_url, image_path, expected):
    session, click = expected
    client = Client(app_url, verbose=False)
    overlay, segments, files, click_overlay, clicks, status = client.predict(
        handle_file(image_path), LABELS, STUFF, api_name="/segment"
    )
    assert segments["headers"] == ["id", "label", "score", "area"]
    assert segments["data"] == [[s["id"], s["label"], round(s["score"], 4), s["area"]] for s in session.segments_info]
    assert len(segments["data"]) > 0 and {row[1] for row in segments["data"]} <= {"ball", "box", "sky"}
    assert status.startswith(f"{len(segments['data'])} segments.") and click_overlay is None and clicks["data"] == []
    assert PIL.Image.open(overlay).size == (120, 90)
    # Downloads: the panoptic PNG's ids and areas are the table's; the JSON lists the same segments.
    png, record = sorted(files, key=lambda path: path.endswith(".json"))
    ids, counts = np.unique(rgb_to_segment_ids(np.array(PIL.Image.open(png))), return_counts=True)
    assert {i: c for i, c in zip(ids.tolist(), counts.tolist()) if i} == {row[0]: row[3] for row in segments["data"]}
    record = json.loads(open(record, encoding="utf-8").read())
    assert [s["id"] for s in record["segments_info"]] == [row[0] for row in segments["data"]]
    assert record["labels"] == VOCABULARY and (record["width"], record["height"]) == (120, 90)

    click_overlay, clicks, status = client.predict(*CLICK, api_name="/point")
    assert clicks["data"] == [
        [1, *map(float, CLICK), click["label"], round(click["score"], 4), round(click["iou_score"], 4),
         int((np.array(click["mask"]) > 0).sum())]
    ]
    assert status.startswith(f"Click 1 at ({CLICK[0]}, {CLICK[1]}): {click['label']}")
    assert PIL.Image.open(click_overlay).size == (120, 90)
    clicks = client.predict(100, 10, api_name="/point")[1]
    assert [row[0] for row in clicks["data"]] == [1, 2]


def test_bad_inputs_are_messages_in_the_page(app_url, image_path):
    client = Client(app_url, verbose=False)
    with pytest.raises(AppError, match="Segment an image first, then click on it"):
        client.predict(*CLICK, api_name="/point")
    with pytest.raises(AppError, match="Upload an image first"):
        client.predict(None, LABELS, STUFF, api_name="/segment")
    with pytest.raises(AppError, match="empty class name in item 2"):
        client.predict(handle_file(image_path), "ball,,sky", "", api_name="/segment")
    with pytest.raises(AppError, match="Stuff classes were given without class names"):
        client.predict(handle_file(image_path), "", "sky", api_name="/segment")
    client.predict(handle_file(image_path), LABELS, STUFF, api_name="/segment")
    with pytest.raises(AppError, match=r"The click \(500, 10\) is outside the 120x90 image"):
        client.predict(500, 10, api_name="/point")


def test_encoders_run_once_per_uploaded_image(model_dir, image_path, tmp_path):
    demo = PosSamDemo(model_dir)
    calls = {"sam": 0, "transformer_decoder": 0, "sam_prompt_decoder": 0}
    for name in calls:
        demo.model.get_submodule(name).register_forward_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)
        )
    image = np.array(PIL.Image.open(image_path))
    session = demo.segment(DemoSession(), image, LABELS, STUFF, tmp_path)
    session = demo.segment(session, image.copy(), "ball, box", "", tmp_path)  # new classes, same image
    session = demo.click(demo.click(session, *CLICK), 100, 10)
    assert calls == {"sam": 1, "transformer_decoder": 2, "sam_prompt_decoder": 2}
    assert len(session.clicks) == 2 and {c["label"] for c in session.clicks} <= {"ball", "box"}
    demo.segment(session, image[::-1].copy(), "ball, box", "", tmp_path)  # another image: encoded once more
    assert calls["sam"] == 2


def test_app_serves_loopback_addresses_only(model_dir, capsys):
    with pytest.raises(SystemExit) as exit:
        app_main(["--model", model_dir, "--host", "0.0.0.0"])
    assert exit.value.code == 2 and "loopback addresses only" in capsys.readouterr().err


def test_headless_browser_uploads_types_clicks_and_sees_labelled_overlay(app_url, model_dir, image_path, expected, tmp_path):
    session, _ = expected
    driver = chromium_driver()
    try:
        page = use_demo(driver, app_url, image_path, LABELS, STUFF, CLICK)
        screenshot = tmp_path / "page.png"
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    # The labelled overlay of the uploaded image and its segments table are on the page.
    assert page["overlay_size"] == (120, 90)
    for segment in session.segments_info:
        assert segment["label"] in page["segments"] and str(segment["area"]) in page["segments"]
    # The click landed on the overlay (the page reports the image pixel it hit) and is named as the library names it.
    found = re.match(r"Click 1 at \((\d+), (\d+)\): (\w+) \(([\d.]+)\)", page["status"])
    assert found, page["status"]
    x, y = int(found.group(1)), int(found.group(2))
    assert abs(x - CLICK[0]) <= 1 and abs(y - CLICK[1]) <= 1
    segmenter = pipeline("open-vocab-panoptic", model=model_dir)
    click = segmenter(image_path, candidate_labels=VOCABULARY, stuff_labels=STUFF_LABELS, points=[(x, y)])[0]
    assert found.group(3) == click["label"] and float(found.group(4)) == pytest.approx(click["score"], abs=0.006)
    assert click["label"] in page["clicks"]
    assert PIL.Image.open(screenshot).size[0] == 1400  # the page was rendered (the height is the viewport)
