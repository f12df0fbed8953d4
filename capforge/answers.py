"""The one answer builder: what the HTTP API, ``capforge.Recognizer`` and the page all answer for
one image, whatever the mode (the mode's own fields ride in Prediction.fields). Request inputs a
mode reads beside the image (``Mode.inputs``) are parsed here too, once for every caller."""

from __future__ import annotations

import io
import time
from typing import Any, Callable, Mapping

from PIL import Image

from capforge.errors import InputError
from capforge.modes import MODE_CLASSES, Mode, Prediction, accepted


def build_answer(model: str, prediction: Prediction, mode: Mode, min_confidence: float, request_id: str | None,
                 started: float) -> dict[str, Any]:
    """The answer: model, result, confidence, chars (and the mode's and its answer rule's fields),
    accepted, request_id and time_ms since ``started`` (a time.perf_counter() reading). The
    result is what the mode's answer rule (ANSWER) makes of the reading: an arithmetic result."""
    out = {"model": model, **mode.rule.answer(prediction).to_dict()}
    # gated on the confidence as sent (rounded), so a threshold copied from an answer accepts it
    return out | {"accepted": accepted(out["confidence"], min_confidence), "request_id": request_id,
                  "time_ms": round((time.perf_counter() - started) * 1000, 3)}


def prompt_clicks(mode: Mode, image: Image.Image, answer: Mapping[str, Any], prediction: Prediction, prompt: Any,
                  companion: Any = None) -> list[dict[str, Any]]:
    """Click points for a crawler's ``prompt`` (the targets to click, in order) among the boxes of
    ``answer`` (from ``prediction``) of a mode that takes prompts; raises InputError for a prompt
    it cannot take, TargetNotFound where a target is in none of the boxes."""
    if not mode.takes_prompt:
        takers = " and ".join(name for name, cls in MODE_CLASSES.items() if cls.takes_prompt)
        raise InputError("prompt_not_supported", f"'prompt' is for {takers} models; this one is {mode.name}")
    if not (isinstance(prompt, str) or isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)) \
            or not prompt or len(prompt) > 64:
        raise InputError("invalid_prompt", "'prompt' must be the targets to click in order: a string ('abc', or "
                         "'cat,dog') or a list of names, at most 64")
    # the detector's own classes may fall back on weaker boxes; a companion reader reads served boxes only
    boxes = answer.get("boxes", []) if companion else prediction.candidates or []
    return mode.clicks(image.convert("RGB"), boxes, prompt, companion)


def every_input() -> dict[str, str]:
    """Each input some registered mode reads (name -> kind): what a request may send beside the image."""
    return {i.name: i.kind for cls in MODE_CLASSES.values() for i in cls.inputs}


def parse_inputs(mode: Mode, given: Mapping[str, Any], image_from: Callable[[Any], bytes] = bytes) -> dict[str, Any]:
    """The inputs of ``given`` (a request's fields) that ``mode`` reads, parsed; ``image_from`` turns
    a field's value into image bytes (base64 for JSON, a file's bytes for a form); a PIL image is
    taken as it is. An input that another mode reads but this one does not is refused (it would
    be silently ignored)."""
    own = {i.name: i for i in mode.inputs}
    readable = every_input()
    sent = {name: value for name, value in given.items() if name in readable and value not in (None, "")}
    for name in sent:
        if name not in own:
            reads = ", ".join(f"'{i.name}'" for i in mode.inputs) or "nothing"
            raise InputError("input_not_supported", f"'{name}' is not read by {mode.name} models; they read "
                             f"{reads} beside the image")
    out: dict[str, Any] = {}
    for name, value in sent.items():
        kind = own[name].kind
        if kind == "image" and isinstance(value, Image.Image):
            out[name] = value
        elif kind == "image":
            data = image_from(value)  # its own mistakes (base64, size) are reported as they are
            try:
                out[name] = Image.open(io.BytesIO(data))
                out[name].load()
            except Exception as exc:  # Pillow's many exception types for a broken file
                raise InputError("invalid_image", f"'{name}' is not an image Pillow can read "
                                 f"({type(exc).__name__})") from None
        elif kind == "number":
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if isinstance(value, bool) or not number > 0 or number == float("inf"):
                raise InputError("invalid_input", f"'{name}' must be a positive number; received {value!r}")
            out[name] = number
        else:
            if not isinstance(value, str):
                raise InputError("invalid_input", f"'{name}' must be a string; received {type(value).__name__}")
            out[name] = value
    return out
