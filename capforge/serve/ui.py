"""The Gradio page: pick a model, upload or paste an image, read the text, per-character
confidence and time; a click-captcha model's boxes are drawn on the image. It calls the same
predictors as the API. A tab per served model shows how good it is: its test report, training
curves, confusions, reliability diagram and worst answers (read afresh when the page loads)."""

from __future__ import annotations

import json
import time
from typing import Any

from capforge.data.images import iter_images
from capforge.modes import accepted
from capforge.reports import summary_text
from capforge.serve.registry import ModelRegistry, ServedModel

# The pictures a report tab shows: (folder in the workspace, file, caption).
REPORT_PICTURES = (("logs", "training_curves.png", "training curves"),
                   ("reports", "test_reliability.png", "confidence against accuracy (reliability)"),
                   ("reports", "test_confusions.png", "most confused symbols"),
                   ("reports", "test_worst.png", "worst answers"))


def report_view(model: ServedModel) -> tuple[str, list[tuple[str, str]]]:
    """The report tab's text (Markdown) and pictures for ``model``, from its workspace's files."""
    root = model.workspace.root
    path = root / "reports" / "test_report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        report.setdefault("report_path", f"reports/{path.name}")
        text = f"```\n{summary_text(report)}\n```"
    except FileNotFoundError:
        text = f"No test report for **{model.name}** yet: run `python test.py` in its workspace."
    except (ValueError, KeyError) as exc:  # a report from another version or a broken file
        text = f"The test report of **{model.name}** cannot be read ({type(exc).__name__}: {exc}); rerun test.py."
    pictures = [(str(root / folder / name), caption) for folder, name, caption in REPORT_PICTURES
                if (root / folder / name).is_file()]
    return f"## {model.name}\n{text}", pictures


def build_ui(registry: ModelRegistry) -> Any:
    """A gr.Blocks page for ``registry``."""
    import gradio as gr

    names = sorted(registry.models)

    def answer(name: str, image: Any) -> tuple[str, dict[str, float], str, Any]:
        if image is None:
            return "", {}, "upload an image first", None
        try:
            model = registry.resolve(name or None)
        except Exception as exc:  # a RequestError: show its message on the page
            return "", {}, str(exc), None
        started = time.perf_counter()
        prediction = model.predictor.predict([image])[0]
        elapsed = (time.perf_counter() - started) * 1000
        chars = {f"{i + 1}: {c}": round(p, 4) for i, (c, p) in enumerate(prediction.chars)}
        good = accepted(prediction.confidence, model.settings.MIN_CONFIDENCE)
        boxes = None
        if prediction.boxes is not None:
            boxes = (image.convert("RGB"), [((int(b["x1"]), int(b["y1"]), int(b["x2"]), int(b["y2"])),
                                             f"{b['label']} {b['score']:.2f}") for b in prediction.boxes])
        return (prediction.text, chars,
                f"confidence {prediction.confidence:.4f} ({'accepted' if good else 'not accepted: below MIN_CONFIDENCE or cannot be right'})"
                f"; {elapsed:.1f} ms", boxes)

    examples = []
    for model in registry.models.values():
        examples += [[model.name, str(p)] for p in list(iter_images(model.workspace.split_dir("test")))[:4]]
    with gr.Blocks(title="capforge") as page:
        gr.Markdown("# capforge\nPick a model, drop in a captcha, read the answer.")
        with gr.Tab("recognize"):
            with gr.Row():
                with gr.Column():
                    model = gr.Dropdown(names, value=names[0] if names else None, label="model")
                    image = gr.Image(type="pil", label="captcha", sources=["upload", "clipboard"])
                    button = gr.Button("Recognize", variant="primary")
                with gr.Column():
                    text = gr.Textbox(label="result", elem_id="result")
                    chars = gr.Label(label="per-character confidence")
                    info = gr.Textbox(label="confidence and time", elem_id="info")
                    boxes = gr.AnnotatedImage(label="detected boxes (click captchas)", elem_id="boxes")
            outputs = [text, chars, info, boxes]
            # Unqueued: each answer is one HTTP request, so it works whichever worker process takes
            # it (Gradio's queue keeps a page's session in one process).
            button.click(answer, [model, image], outputs, queue=False)
            image.upload(answer, [model, image], outputs, queue=False)
            if examples:
                gr.Examples(examples, [model, image])
        for name in names:
            with gr.Tab(f"report: {name}"):
                summary = gr.Markdown(elem_id=f"report-{name}")
                pictures = gr.Gallery(label="pictures", columns=2, height="auto", elem_id=f"pictures-{name}")
            page.load(lambda name=name: report_view(registry.resolve(name)), None, [summary, pictures],
                      queue=False)
    return page
