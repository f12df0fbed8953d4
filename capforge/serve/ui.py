"""The Gradio page: pick a model, upload or paste an image, read the text, per-character
confidence and time; a click-captcha model's boxes are drawn on the image. It calls the same
predictors as the API."""

from __future__ import annotations

import time
from typing import Any

from capforge.data.images import iter_images
from capforge.modes import accepted
from capforge.serve.registry import ModelRegistry


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
        # Unqueued: each answer is one HTTP request, so it works whichever worker process takes it
        # (Gradio's queue keeps a page's session in one process).
        button.click(answer, [model, image], outputs, queue=False)
        image.upload(answer, [model, image], outputs, queue=False)
        if examples:
            gr.Examples(examples, [model, image])
    return page
