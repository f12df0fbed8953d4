"""The API's requests and answers as pydantic models, for /docs (OpenAPI) and for clients.

The handlers read the raw request themselves, so each mistake gets its own stable error code
(ERROR_CODES) instead of one generic validation error, and no answer pays for a second
validation; these models document exactly what those handlers accept and return.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, create_model

from capforge.modes import MODE_CLASSES
from capforge.modes.answer_rules import RULES

IMAGE_EXAMPLE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGP4DwABAQEAG7buVgAAAABJRU5ErkJggg=="

# Every error code the API answers with, its status and when (the README lists them too).
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "the body is not a JSON object"),
    "invalid_base64": (400, "'image' is not base64 (or a base64 data URL)"),
    "empty_image": (400, "the image is 0 bytes"),
    "invalid_image": (400, "the bytes are not an image Pillow can read"),
    "invalid_model_name": (400, "'model' is not a string"),
    "model_required": (400, "several models are served and 'model' is missing"),
    "invalid_prompt": (400, "'prompt' is not a string or a list of names"),
    "prompt_not_supported": (400, "'prompt' sent to a model that is not a click-captcha model"),
    "input_not_supported": (400, "an input beside the image (e.g. 'piece') that the model's mode does not read"),
    "invalid_input": (400, "an input beside the image of the wrong kind (e.g. 'display_width' not a positive number)"),
    "invalid_form": (400, "the multipart body cannot be parsed"),
    "invalid_label": (400, "the label is empty, too long, or breaks the workspace's CHARSET or length rules"),
    "invalid_outcome": (400, "'outcome' is not 'right' or 'wrong'"),
    "invalid_action": (400, "a review 'action' other than 'label', 'skip' or 'unreadable'"),
    "unauthorized": (401, "the X-API-Key header is missing or wrong"),
    "feedback_disabled": (403, "the model's workspace does not set FEEDBACK = True"),
    "reports_disabled": (403, "the model's workspace keeps no answers to report on (CAPTURE, OUTCOME_WINDOW)"),
    "unknown_model": (404, "no served model has that name"),
    "not_found": (404, "no route at that path"),
    "unknown_request": (404, "no kept image has that request_id (never kept, no longer kept, or reported already)"),
    "unknown_item": (404, "the inbox holds no image with that key (reviewed already?)"),
    "unknown_part": (404, "the demo model's captchas come with no image of that name (a slider's: 'piece')"),
    "method_not_allowed": (405, "the route exists for another HTTP method"),
    "inbox_full": (409, "data/inbox holds INBOX_MAX_FILES images or INBOX_MAX_MB already"),
    "body_too_large": (413, "the request body is over the limit"),
    "image_too_large": (413, "the image is over MAX_IMAGE_BYTES or has too many pixels"),
    "wrong_content_type": (415, "the body is not the content type the route reads"),
    "unsupported_media_type": (415, "the data URL names a type that is not an image"),
    "missing_field": (422, "a required field is missing"),
    "invalid_parameter": (422, "a query parameter has the wrong type"),
    "missing_image": (422, "'image' is empty"),
    "target_not_found": (422, "a prompted target matches no detected box"),
}


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable; see the README's list",
                      examples=["invalid_base64"])
    message: str = Field(description="what was received and what is allowed",
                         examples=["the 'image' field is not valid base64"])


class ErrorAnswer(BaseModel):
    """Every 4xx answer, whatever the route."""

    error: ErrorDetail


class RecognizeRequest(BaseModel):
    image: str = Field(description="the image file's bytes in base64, or a data:image/...;base64, URL",
                       examples=[IMAGE_EXAMPLE])
    model: str | None = Field(None, description="the workspace to ask; optional when one model is served",
                              examples=["weibo"])
    prompt: str | list[str] | None = Field(None, description="click captchas only: the targets to click, "
                                           "in order ('abc', 'cat,dog' or a list)")


class SymbolConfidence(BaseModel):
    char: str
    confidence: float


class ClassConfidence(BaseModel):
    label: str
    confidence: float


class Box(BaseModel):
    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


class Click(BaseModel):
    target: str
    x: float
    y: float
    score: float


class RecognizeAnswer(BaseModel):
    model: str = Field(examples=["weibo"])
    result: str = Field(description="the answer: text, a class, or the detected classes left to right",
                        examples=["x7k2"])
    confidence: float = Field(description="calibrated: answers at 0.8 are right about 80 % of the time; "
                              "0 for an answer that cannot be right", examples=[0.98])
    chars: list[SymbolConfidence]
    top: list[ClassConfidence] | None = Field(None, description="NUM_CLASSES: the five likeliest classes")
    boxes: list[Box] | None = Field(None, description="click captchas: boxes in the image's pixels")
    clicks: list[Click] | None = Field(None, description="click captchas with a prompt: where to click, in order")
    accepted: bool = Field(description="confidence > 0 and at least the workspace's MIN_CONFIDENCE")
    request_id: str = Field(description="the image's content key: name it in POST /api/v1/report once the "
                            "site said whether the answer was right", examples=["3f2a9c0d4b5e6f708192"])
    time_ms: float = Field(examples=[1.9])


class BearcatAnswer(BaseModel):
    """The Bearcat_captcha protocol's answer (form field 'img' in, return_code out)."""

    return_code: str = Field(examples=["200"], description="'200' ok, '5004' no img, '5005' bad request")
    return_info: str
    result: str | None
    recognition_rate: float
    time: float


class ModelInfo(BaseModel):
    name: str
    mode: str
    charset_size: int
    input_size: list[int] = Field(description="height, width, channels")
    exported_at: str


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    models: list[str]


class FeedbackRequest(BaseModel):
    image: str = Field(description="the image in base64", examples=[IMAGE_EXAMPLE])
    label: str = Field(description="the right answer", examples=["x7k2"])
    model: str | None = None


class FeedbackAnswer(BaseModel):
    stored: str = Field(description="the image in the review inbox, with its label",
                        examples=["data/inbox/3f2a9c0d4b5e6f708192.png"])


class ReportRequest(BaseModel):
    request_id: str = Field(description="from the answer being reported", examples=["3f2a9c0d4b5e6f708192"])
    outcome: str = Field(description="what the site said: 'right' or 'wrong'", examples=["right"])
    model: str | None = None


class ReportAnswer(BaseModel):
    outcome: str = Field(examples=["right"])
    stored: str = Field(description="right: the labelled training image; wrong: the image, now first in "
                        "the review queue", examples=["data/pool/x7k2_3f2a9c0d4b5e6f708192.png"])


class ReviewItem(BaseModel):
    """The next image to review (null when the inbox is empty) and how many are left."""

    left: int = Field(examples=[12])
    key: str | None = Field(None, examples=["3f2a9c0d4b5e6f708192"])
    answer: str | None = Field(None, description="pre-filled: the sender's label, else the model's answer")
    confidence: float | None = None
    wrong: bool = Field(False, description="a crawler reported the model's answer wrong")
    about: str | None = Field(None, description="where it came from, in words")
    image: str | None = Field(None, description="the image in base64")


class ReviewRequest(BaseModel):
    key: str = Field(examples=["3f2a9c0d4b5e6f708192"])
    action: str = Field(description="'label' (with 'label'), 'skip', or 'unreadable' (with an optional "
                        "'reason')", examples=["label"])
    label: str | None = Field(None, examples=["x7k2"])
    reason: str | None = None
    model: str | None = None


class ReviewAnswer(BaseModel):
    action: str = Field(examples=["label"])
    stored: str | None = Field(None, description="where the image went (the pool or quarantine)",
                               examples=["data/pool/x7k2_3f2a9c0d4b5e6f708192.png"])
    left: int = Field(description="images still waiting for review", examples=[11])


def with_mode_fields() -> tuple[type[BaseModel], type[BaseModel]]:
    """RecognizeRequest and RecognizeAnswer with the inputs and answer fields every registered
    mode declares (``Mode.inputs``, ``Mode.answer_fields``), each optional and described by its mode."""
    inputs: dict[str, Any] = {}
    answers: dict[str, Any] = {}
    for name, cls in MODE_CLASSES.items():
        for given in cls.inputs:
            kind = {"image": str, "number": float}.get(given.kind, str)
            inputs[given.name] = (kind | None, Field(None, description=f"{name}: {given.help}"
                                                      + (" (base64)" if given.kind == "image" else "")))
        for field_name, meaning in cls.answer_fields.items():
            answers[field_name] = (Any, Field(None, description=f"{name}: {meaning}"))
    for rule in RULES.values():
        for field_name, meaning in rule.answer_fields.items():
            answers[field_name] = (Any, Field(None, description=f"ANSWER = {rule.name!r}: {meaning}"))
    return (create_model("RecognizeRequest", __base__=RecognizeRequest, **inputs),
            create_model("RecognizeAnswer", __base__=RecognizeAnswer, **answers))


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each listing its codes."""
    return {status: {"model": ErrorAnswer, "description": "; ".join(
        f"{code}: {why}" for code, (s, why) in ERROR_CODES.items() if s == status)} for status in statuses}


def json_request(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body of ``model`` (read by the handler itself)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def form_body(fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """``openapi_extra`` documenting a form body with these fields."""
    schema = {"type": "object", "properties": fields, "required": required}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema},
                                                          "application/x-www-form-urlencoded": {"schema": schema}}}}
