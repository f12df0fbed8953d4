"""Answering one image: decode and preprocess inline, batch through onnxruntime, decode, cache by
content; for click captchas, the clicks a prompt asks for; keep the image for review or for an
outcome report where the workspace asks for it."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Mapping

from capforge.data.images import image_suffix, open_image
from capforge.errors import ImageError, ImageTooLargeError, InputError, TargetNotFound
from capforge.inbox import content_key
from capforge.answers import build_answer, prompt_clicks
from capforge.modes import Prediction
from capforge.serve.inputs import RequestError
from capforge.serve.metrics import Metrics
from capforge.serve.registry import ServedModel

def clicks_for(model: ServedModel, data: bytes, answer: Mapping[str, Any], prediction: Prediction,
               prompt: Any) -> list[dict[str, Any]]:
    """Click points for ``prompt`` in its order, among the boxes of ``answer`` (modes that take prompts)."""
    try:
        return prompt_clicks(model.predictor.mode, open_image(data), answer, prediction, prompt, model.recognizer)
    except InputError as exc:
        raise RequestError(400, exc.code, exc.message) from None
    except TargetNotFound as exc:
        raise RequestError(422, "target_not_found", str(exc)) from None


def keep(model: ServedModel, data: bytes, answer: Mapping[str, Any]) -> str | None:
    """Keep the image of ``answer`` in the inbox when the workspace asks for it: for review
    (CAPTURE), or only for a crawler's outcome report (OUTCOME_WINDOW). Returns why it was kept."""
    settings = model.settings
    doubtful = not answer["accepted"] or answer["confidence"] < settings.CAPTURE_BELOW
    review = settings.CAPTURE == "all" or (settings.CAPTURE == "doubtful" and doubtful)
    if not review and not settings.OUTCOME_WINDOW:
        return None
    # what a person corrects is the reading (an arithmetic answer's expression), not the result
    record = {"source": "capture", "answer": answer.get("reading", answer["result"]), "confidence": answer["confidence"],
              "accepted": answer["accepted"], "model": model.name, "model_version": model.version}
    kept = model.inbox.add(data, image_suffix(data), record, awaiting=not review)
    return None if kept is None else "review" if review else "awaiting_report"


async def recognize(model: ServedModel, data: bytes, prompt: Any = None, metrics: Metrics | None = None,
                    inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Decode and preprocess, batch through onnxruntime, decode; cached by content. ``inputs``: what
    the request sent beside the image that the mode reads (capforge.answers.parse_inputs). With a
    ``prompt`` (detection), add the click points in the prompt's order. The answer carries the
    image's ``request_id`` (its content key), which outcome reports name."""
    started = time.perf_counter()
    key = content_key(data)  # the cache's key and the answer's request_id
    mode = model.predictor.mode
    # a mode that cuts the image (a grid's tiles) answers it in a thread, uncached: its answer follows the prompt
    prediction = None if mode.cuts_image else model.cached(key)
    try:
        if mode.cuts_image:
            prediction = await asyncio.to_thread(mode.answer_image, open_image(data), model.predictor.predict,
                                                 model.recognizer, prompt)
        elif prediction is None:
            # Inline: a captcha decodes and resizes in well under a millisecond, less than a thread hop.
            array, placed = model.predictor.placed(data)
            prediction = model.predictor.answer(await model.batcher.submit(array), placed)
            model.remember(key, prediction)
    except ImageError as exc:
        too_large = isinstance(exc, ImageTooLargeError)
        raise RequestError(413 if too_large else 400, "image_too_large" if too_large else "invalid_image",
                           str(exc).replace("image bytes: ", "")) from None
    if inputs:  # in a thread: a mode may match pictures (a slider's piece)
        prediction = await asyncio.to_thread(mode.respond, prediction, open_image(data), inputs)
    answer = build_answer(model.name, prediction, mode, model.settings.MIN_CONFIDENCE, key, started)
    if prompt is not None:  # in a thread: a CLICK_RECOGNIZER runs a second model on the crops
        answer["clicks"] = await asyncio.to_thread(clicks_for, model, data, answer, prediction, prompt)
    if model.settings.CAPTURE != "off" or model.settings.OUTCOME_WINDOW:  # file writes: off the event loop
        try:
            why = await asyncio.to_thread(keep, model, data, answer)
        except OSError as exc:  # a full or read-only disk costs the capture, never the answer
            print(f"warning: {model.name}: could not keep an answered image in data/inbox: {exc}", file=sys.stderr)
            why = "failed"
        if why and metrics:
            metrics.kept.labels(model.name, why).inc()
    if metrics:
        metrics.answers.labels(model.name).inc()
    answer["time_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return answer
