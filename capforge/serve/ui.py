"""The Gradio page: pick a model, upload or paste an image, read the text, per-character
confidence and time; a click-captcha model's boxes are drawn on the image. It calls the same
predictors as the API. A tab per served model shows how good it is: its test report, training
curves, confusions, reliability diagram and worst answers (read afresh when the page loads); and
a review tab per workspace works through its inbox (capforge.inbox), keyboard first."""

from __future__ import annotations

import json
import time
from typing import Any

from capforge.data.images import iter_images, open_image
from capforge.answers import build_answer, parse_inputs
from capforge.errors import CapforgeError, ReviewError
from capforge.modes import summary_text
from capforge.serve.registry import ModelRegistry, ServedModel

# The pictures a report tab shows: (folder in the workspace, file, caption).
REPORT_PICTURES = (("logs", "training_curves.png", "training curves"),
                   ("reports", "test_reliability.png", "confidence against accuracy (reliability)"),
                   ("reports", "test_confusions.png", "most confused symbols"),
                   ("reports", "test_worst.png", "worst answers"))


# Keys of the review tabs: Enter accepts the label typed (a Textbox submit); these two are added.
REVIEW_KEYS = """<script>
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  const kind = event.shiftKey ? "unreadable" : "skip";
  const button = [...document.querySelectorAll(`button[id^="review-${kind}-"]`)].find((b) => b.offsetParent !== null);
  if (button) { event.preventDefault(); button.click(); }
});
</script>"""


def review_view(model: ServedModel, note: str = "") -> tuple[str, str | None, str, str]:
    """The review tab's status (Markdown), image, pre-filled label and the image's key."""
    item, left = model.review().next()
    if item is None:
        return f"{note}\n\nThe inbox is empty: nothing to review.".strip(), None, "", ""
    status = f"{note}\n\n**{left} left.** {item.describe()}".strip()
    return status, str(item.image), item.answer, item.key


def review_act(model: ServedModel, key: str, action: str, label: str, reason: str = "") -> tuple[str, str | None, str, str]:
    """Apply a person's answer, then show the next image (or say why it was not written)."""
    try:
        stored = model.review().act(key, action, (label or "").strip(), reason)
    except ReviewError as exc:
        status, image, _, key = review_view(model)
        return f"**Not written:** {exc}\n\n{status}", image, label, key
    return review_view(model, f"{action}: {model.workspace.relative(stored)}" if stored else f"{action}")


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

    beside = [given for cls in {m.predictor.mode.__class__ for m in registry.models.values()} for given in cls.inputs]
    beside = list({given.name: given for given in beside}.values())  # each input once, whichever modes read it

    def answer(name: str, path: str | None, *values: Any) -> tuple[str, dict[str, float], str, Any, dict[str, Any]]:
        if path is None:
            return "", {}, "upload an image first", None, {}
        try:
            model = registry.resolve(name or None)
            mode = model.predictor.mode
            started = time.perf_counter()
            image = open_image(path)
            # the file as uploaded: an animation keeps every frame for FRAMES to merge; a grid, its tiles
            prediction = mode.answer_image(image, model.predictor.predict, model.recognizer) if mode.cuts_image \
                else model.predictor.predict([path])[0]
            # an empty number box sends 0 from the browser: on the page that means "not given"
            inputs = parse_inputs(mode, {i.name: v for i, v in zip(beside, values) if v or i.kind != "number"})
            if inputs:
                prediction = mode.respond(prediction, image, inputs)
        except CapforgeError as exc:  # an unknown model, an input this mode does not read: say so on the page
            return "", {}, str(exc), None, {}
        whole = build_answer(model.name, prediction, mode, model.settings.MIN_CONFIDENCE, None, started)
        chars = {f"{i + 1}: {c}": round(p, 4) for i, (c, p) in enumerate(prediction.chars)}
        marks = mode.annotations(prediction, image.size)
        shown = whole["result"] + (f"   (read {whole['reading']!r})" if "reading" in whole else "")
        return (shown, chars,
                f"confidence {whole['confidence']:.4f} ({'accepted' if whole['accepted'] else 'not accepted: below MIN_CONFIDENCE or cannot be right'})"
                f"; {whole['time_ms']:.1f} ms", None if marks is None else (image.convert("RGB"), marks), whole)

    examples = []
    for model in registry.models.values():
        examples += [[model.name, str(p)] for p in list(iter_images(model.workspace.split_dir("test")))[:4]]
    with gr.Blocks(title="capforge") as page:
        gr.Markdown("# capforge\nPick a model, drop in a captcha, read the answer.")
        with gr.Tab("recognize"):
            with gr.Row():
                with gr.Column():
                    model = gr.Dropdown(names, value=names[0] if names else None, label="model")
                    # the uploaded file itself (image_mode None): an animation keeps its frames
                    image = gr.Image(type="filepath", image_mode=None, label="captcha", sources=["upload", "clipboard"])
                    # empty until a person fills them in: an input left empty is not sent
                    extras = [gr.Image(type="pil", label=f"{given.name}: {given.help}", elem_id=f"input-{given.name}",
                                       sources=["upload", "clipboard"])
                              if given.kind == "image" else
                              gr.Number(None, label=f"{given.name}: {given.help}", elem_id=f"input-{given.name}")
                              if given.kind == "number" else
                              gr.Textbox(label=f"{given.name}: {given.help}", elem_id=f"input-{given.name}")
                              for given in beside]
                    button = gr.Button("Recognize", variant="primary")
                with gr.Column():
                    text = gr.Textbox(label="result", elem_id="result")
                    chars = gr.Label(label="per-character confidence")
                    info = gr.Textbox(label="confidence and time", elem_id="info")
                    boxes = gr.AnnotatedImage(label="the answer on the image (boxes, gaps)", elem_id="boxes")
                    whole = gr.JSON(label="the whole answer, as the API gives it", elem_id="answer")
            outputs = [text, chars, info, boxes, whole]
            # Unqueued: each answer is one HTTP request, so it works whichever worker process takes
            # it (Gradio's queue keeps a page's session in one process).
            button.click(answer, [model, image, *extras], outputs, queue=False)
            image.upload(answer, [model, image, *extras], outputs, queue=False)
            if examples:
                gr.Examples(examples, [model, image])
        for name in names:
            with gr.Tab(f"report: {name}"):
                summary = gr.Markdown(elem_id=f"report-{name}")
                pictures = gr.Gallery(label="pictures", columns=2, height="auto", elem_id=f"pictures-{name}")
            page.load(lambda name=name: report_view(registry.resolve(name)), None, [summary, pictures],
                      queue=False)
            review_tab(gr, page, registry, name)
    return page


def review_tab(gr: Any, page: Any, registry: ModelRegistry, name: str) -> None:
    """The review tab of one workspace: its inbox, least confident first, keyboard first."""
    with gr.Tab(f"review: {name}"):
        gr.Markdown("Type (or pick the class) to correct, **Enter** to accept, **Esc** to skip, **Shift+Esc** "
                    "for unreadable.")
        status = gr.Markdown(elem_id=f"review-status-{name}")
        with gr.Row():
            image = gr.Image(type="filepath", label="captcha", interactive=False, elem_id=f"review-image-{name}")
            with gr.Column():
                mode = registry.models[name].predictor.mode
                if mode.labels_by_folder:  # whole-image classes: pick one
                    label = gr.Dropdown(list(mode.charset.symbols), label="class", elem_id=f"review-label-{name}")
                else:
                    label = gr.Textbox(label="label", elem_id=f"review-label-{name}")
                reason = gr.Textbox(label="why unreadable (optional)", elem_id=f"review-reason-{name}")
                with gr.Row():
                    accept = gr.Button("Accept", variant="primary", elem_id=f"review-accept-{name}")
                    skip = gr.Button("Skip", elem_id=f"review-skip-{name}")
                    unreadable = gr.Button("Unreadable", elem_id=f"review-unreadable-{name}")
        # The key travels with the page (a hidden field), not as gr.State: session state would live in
        # one worker process, and it makes Gradio hold a heartbeat connection open.
        key = gr.Textbox(visible=False)
        shown = [status, image, label, key]
        page.load(lambda: review_view(registry.resolve(name)), None, shown, queue=False)
        for trigger in (accept.click, *((label.submit,) if isinstance(label, gr.Textbox) else ())):
            trigger(lambda k, text: review_act(registry.resolve(name), k, "label", text), [key, label], shown,
                    queue=False)
        skip.click(lambda k, text: review_act(registry.resolve(name), k, "skip", text), [key, label], shown,
                   queue=False)
        unreadable.click(lambda k, text, why: review_act(registry.resolve(name), k, "unreadable", text, why),
                         [key, label, reason], shown, queue=False)
