"""`possam app`: a web demo of PosSAM (Gradio, `pip install -e .[app]`).

    possam app --model path/to/possam            # then open http://127.0.0.1:7860

Upload an image, type class names (commas between classes, `|` between synonyms of one class, stuff classes in their
own box), and get the panoptic overlay, a table of segments (label, score, area) and the panoptic PNG + JSON to
download. Clicking on the overlay adds a point prompt: SAM's prompt decoder gives its mask and PosSAM names it over
the same vocabulary. The image encoders run once per uploaded image: new labels and every click reuse the cached
features (`PosSamImageFeatures`, decoder queries included). Bad inputs are reported in the page, not as tracebacks.

`PosSamDemo` holds the model and does the work; `build_app` only lays out the page, so tests drive either.
"""


import argparse
import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from ..configuration.vocabulary import Vocabulary, VocabularyError
from .predict_cli import _load_pipeline, _UsageError, parse_class_list
from .panoptic_png import segment_ids_to_rgb
from .prompt_inputs import prepare_prompts
from .visualization import draw_segmentation_overlay


SEGMENT_COLUMNS = ["id", "label", "score", "area"]
PROMPT_COLUMNS = ["click", "x", "y", "label", "score", "SAM IoU", "area"]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class DemoInputError(ValueError):
    """A bad input from the page (no image, malformed labels, a click outside the image): shown to the user."""


@dataclass
class DemoSession:
    """What one browser session has computed for its current image."""

    image: np.ndarray | None = None
    image_digest: str | None = None
    image_inputs: dict | None = None
    image_features: object | None = None  # PosSamImageFeatures, with the decoder queries once segmented
    vocabulary: Vocabulary | None = None
    segments_info: list[dict] = field(default_factory=list)
    overlay: PIL.Image.Image | None = None
    clicks: list[dict] = field(default_factory=list)


def parse_vocabulary(labels: str | None, stuff: str | None) -> Vocabulary | None:
    """The labels box ("car,person|pedestrian,road,sky") and the stuff box ("road,sky") -> a vocabulary; `None` for
    an empty labels box (the model's own vocabulary)."""
    labels, stuff = (labels or "").strip(), (stuff or "").strip()
    if not labels:
        if stuff:
            raise DemoInputError("Stuff classes were given without class names: type the classes in the labels box.")
        return None
    try:
        entries = parse_class_list(labels, "labels")
        stuff_entries = parse_class_list(stuff, "stuff classes") if stuff else None
        return Vocabulary.from_labels(entries, stuff_labels=stuff_entries)
    except (_UsageError, VocabularyError) as error:
        raise DemoInputError(str(error)) from None


class PosSamDemo:
    """The demo's work: panoptic segmentation of an image and named masks for clicks, on cached image features."""

    def __init__(self, model: str, device: str = "cpu"):
        self.pipeline = _load_pipeline(model, device)
        self.model, self.processor = self.pipeline.model, self.pipeline.processor

    # ------------------------------------------------------------------ panoptic

    def segment(self, session: DemoSession, image, labels: str, stuff: str, out_dir: str | Path) -> DemoSession:
        """Segments `image` with the vocabulary of the two boxes; writes `panoptic.png` and `segments.json` to
        `out_dir`. Reuses the session's image features when the image is the one already encoded."""
        if image is None:
            raise DemoInputError("Upload an image first.")
        vocabulary = parse_vocabulary(labels, stuff) or self.pipeline.default_vocabulary()
        try:
            text = self.processor.encode_vocabulary(vocabulary)
        except ValueError as error:
            raise DemoInputError(str(error)) from None
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        image = image[..., :3].astype(np.uint8)
        digest = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()
        if digest != session.image_digest:
            inputs = self.processor(images=image)
            session = DemoSession(
                image=image,
                image_digest=digest,
                image_inputs={key: inputs[key] for key in ("original_sizes", "reshaped_input_sizes")},
                image_features=self.model.get_image_features(inputs["pixel_values"].to(self.model.device, self.model.dtype)),
            )
        with torch.inference_mode():
            outputs = self.model(image_features=session.image_features, **text, output_image_features=True)
        result = self.processor.post_process_panoptic_segmentation(
            outputs,
            vocabulary,
            config=self.model.config,
            target_sizes=session.image_inputs["original_sizes"],
            reshaped_input_sizes=session.image_inputs["reshaped_input_sizes"],
        )[0]
        segmentation = result["segmentation"].cpu().numpy().astype(np.int32)
        ids, counts = np.unique(segmentation, return_counts=True)
        areas = dict(zip(ids.tolist(), counts.tolist()))
        session.segments_info = [
            {**{key: segment[key] for key in ("id", "label_id", "label", "score", "was_fused")},
             "area": int(areas.get(segment["id"], 0))}
            for segment in result["segments_info"]
        ]
        session.image_features = outputs.image_features
        session.vocabulary = vocabulary
        session.overlay = draw_segmentation_overlay(session.image, segmentation, session.segments_info)
        session.clicks = []
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(segment_ids_to_rgb(segmentation)).save(out_dir / "panoptic.png")
        record = {
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "labels": vocabulary.entries,
            "segments_info": session.segments_info,
        }
        (out_dir / "segments.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        return session

    # ------------------------------------------------------------------ prompts

    def click(self, session: DemoSession, x: float, y: float) -> DemoSession:
        """Adds a point prompt at (x, y) in image pixels; its mask (SAM's best of three) is named over the session's
        vocabulary. Runs SAM's mask decoder only."""
        if session.image is None or session.vocabulary is None:
            raise DemoInputError("Segment an image first, then click on it.")
        if x is None or y is None:
            raise DemoInputError("A click needs both x and y.")
        height, width = session.image.shape[:2]
        if not (0 <= x < width and 0 <= y < height):
            raise DemoInputError(f"The click ({x:g}, {y:g}) is outside the {width}x{height} image.")
        points = prepare_prompts(
            session.image_inputs["original_sizes"], session.image_inputs["reshaped_input_sizes"], [[[[x, y]]]]
        )
        text = self.processor.encode_vocabulary(session.vocabulary)
        output = self.model.segment_prompts(session.image_features, **points, **text)
        session.image_features = output.image_features
        result = self.processor.post_process_prompt_segmentation(
            output,
            session.vocabulary,
            config=self.model.config,
            target_sizes=session.image_inputs["original_sizes"],
            reshaped_input_sizes=session.image_inputs["reshaped_input_sizes"],
        )[0][0]
        mask = result["mask"].cpu().numpy()
        session.clicks.append(
            {
                "click": len(session.clicks) + 1,
                "x": round(float(x), 1),
                "y": round(float(y), 1),
                "label": result["label"],
                "score": result["score"],
                "SAM IoU": result["iou_score"],
                "area": int(mask.sum()),
                "mask": mask,
            }
        )
        return session

    def click_overlay(self, session: DemoSession) -> PIL.Image.Image | None:
        """The image with every clicked mask in its label's colour, labelled; later clicks on top."""
        if session.image is None or not session.clicks:
            return None
        segmentation = np.zeros(session.image.shape[:2], dtype=np.int32)
        for click in session.clicks:
            segmentation[click["mask"]] = click["click"]
        infos = [{"id": click["click"], "label": click["label"], "score": click["score"]} for click in session.clicks]
        return draw_segmentation_overlay(session.image, segmentation, infos)


def segment_rows(session: DemoSession) -> list[list]:
    return [[s["id"], s["label"], round(float(s["score"]), 4), s["area"]] for s in session.segments_info]


def click_rows(session: DemoSession) -> list[list]:
    return [
        [c["click"], c["x"], c["y"], c["label"], round(c["score"], 4), round(c["SAM IoU"], 4), c["area"]]
        for c in session.clicks
    ]


def build_app(demo: PosSamDemo):
    """The page: upload + labels -> overlay, segments table, downloads; clicks on the overlay -> named masks."""
    import gradio as gr

    output_root = Path(tempfile.mkdtemp(prefix="possam-app-"))

    def on_segment(image, labels, stuff, session: DemoSession):
        try:
            out_dir = tempfile.mkdtemp(dir=output_root)  # one folder per result: downloads never mix sessions
            session = demo.segment(session, image, labels, stuff, out_dir)
        except DemoInputError as error:
            raise gr.Error(str(error)) from None
        files = [str(Path(out_dir) / "panoptic.png"), str(Path(out_dir) / "segments.json")]
        status = f"{len(session.segments_info)} segments. Click on the overlay to segment a point."
        return session, session.overlay, segment_rows(session), files, None, [], status

    def on_point(x, y, session: DemoSession):
        try:
            session = demo.click(session, x, y)
        except DemoInputError as error:
            raise gr.Error(str(error)) from None
        last = session.clicks[-1]
        status = f"Click {last['click']} at ({last['x']:g}, {last['y']:g}): {last['label']} ({last['score']:.2f})."
        return session, demo.click_overlay(session), click_rows(session), status

    def on_select(session: DemoSession, event: gr.SelectData):
        x, y = event.index
        return (x, y, *on_point(x, y, session))

    with gr.Blocks(title="PosSAM") as page:
        gr.Markdown(
            "# PosSAM: open-vocabulary panoptic segmentation\n"
            "Upload an image, type class names (commas between classes, `|` between synonyms of one class), mark the "
            "stuff classes, press **Segment**. Then click on the overlay: the click's mask is named over your classes."
        )
        session = gr.State(DemoSession())
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image", type="numpy", elem_id="possam-image")
                labels = gr.Textbox(label="Classes", placeholder="cat, person|child, grass", elem_id="possam-labels")
                stuff = gr.Textbox(label="Stuff classes (merged per class)", placeholder="grass", elem_id="possam-stuff")
                segment_button = gr.Button("Segment", variant="primary", elem_id="possam-segment")
                status = gr.Markdown(elem_id="possam-status")
            with gr.Column():
                overlay = gr.Image(label="Panoptic overlay (click to segment a point)", type="pil", interactive=False,
                                   elem_id="possam-overlay")
                segments = gr.Dataframe(headers=SEGMENT_COLUMNS, label="Segments", interactive=False,
                                        elem_id="possam-segments")
                downloads = gr.File(label="Panoptic PNG + JSON", file_count="multiple", elem_id="possam-downloads")
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    x = gr.Number(label="x", precision=1, elem_id="possam-x")
                    y = gr.Number(label="y", precision=1, elem_id="possam-y")
                point_button = gr.Button("Segment point", elem_id="possam-point")
                clicks = gr.Dataframe(headers=PROMPT_COLUMNS, label="Clicked segments", interactive=False,
                                      elem_id="possam-clicks")
            with gr.Column():
                click_overlay = gr.Image(label="Clicked segments", type="pil", interactive=False,
                                         elem_id="possam-click-overlay")

        segment_button.click(
            on_segment,
            [image, labels, stuff, session],
            [session, overlay, segments, downloads, click_overlay, clicks, status],
            api_name="segment",
        )
        point_button.click(on_point, [x, y, session], [session, click_overlay, clicks, status], api_name="point")
        overlay.select(on_select, [session], [x, y, session, click_overlay, clicks, status], api_name=False)
    return page


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Serve the PosSAM web demo (Gradio) on this machine.")
    parser.add_argument("--model", required=True, help="a PosSAM folder (model + processor) or Hub id")
    parser.add_argument("--host", default="127.0.0.1", help=f"loopback address to listen on: {', '.join(LOOPBACK_HOSTS)}")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda, cuda:1, ...)")
    return parser


def main(argv: list[str] | None = None, prog: str = "possam app") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK_HOSTS:
        parser.error(f"--host {args.host}: the demo serves loopback addresses only ({', '.join(LOOPBACK_HOSTS)}).")
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the web demo needs Gradio: pip install -e .[app]", file=sys.stderr)
        return 1
    try:
        demo = PosSamDemo(args.model, args.device)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Serving PosSAM ({args.model}) at http://{args.host}:{args.port}")
    build_app(demo).launch(server_name=args.host, server_port=args.port, share=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
