"""Click order: which detected box to click for each prompted target, in the prompt's order.

Each box gets a score per candidate label: the detector's own class and score, or, when a
CLICK_RECOGNIZER model reads the crop, that model's probabilities (NUM_CLASSES: its top
classes; ORDINARY: its text). Targets and boxes are then paired greedily, best score first,
each box used once.

>>> boxes = [{"label": "b", "score": 0.9, "x1": 0, "y1": 0, "x2": 10, "y2": 10},
...          {"label": "a", "score": 0.8, "x1": 20, "y1": 0, "x2": 30, "y2": 10}]
>>> [c["x"] for c in order_clicks(prompt_targets("ab"), boxes, detector_scores(boxes))]
[25.0, 5.0]
"""

from __future__ import annotations

from typing import Any, Sequence

from PIL import Image

from capforge.errors import TargetNotFound

Scores = list[dict[str, float]]  # per box: candidate label -> score


def prompt_targets(prompt: str | Sequence[str]) -> list[str]:
    """Targets of a prompt: a list of names, a comma/space separated string, or its characters."""
    if not isinstance(prompt, str):
        return [str(p) for p in prompt]
    if "," in prompt or " " in prompt.strip():
        return [p for p in prompt.replace(",", " ").split() if p]
    return list(prompt.strip())


def detector_scores(boxes: list[dict[str, Any]]) -> Scores:
    """Each box scored only for its own detected class."""
    return [{box["label"]: box["score"]} for box in boxes]


def recognizer_scores(image: Image.Image, boxes: list[dict[str, Any]], recognizer: Any,
                      margin: float = 0.1) -> Scores:
    """Each box's crop (with a small margin) read by ``recognizer`` (a serving Predictor)."""
    if not boxes:
        return []
    crops = []
    for box in boxes:
        pad_x, pad_y = margin * (box["x2"] - box["x1"]), margin * (box["y2"] - box["y1"])
        crops.append(image.crop((int(max(0, box["x1"] - pad_x)), int(max(0, box["y1"] - pad_y)),
                                 int(min(image.width, box["x2"] + pad_x)) or 1,
                                 int(min(image.height, box["y2"] + pad_y)) or 1)))
    scores = []
    for prediction in recognizer.predict(crops):
        candidates = dict(prediction.top) if prediction.top else {prediction.text: prediction.confidence}
        scores.append({label.lower(): p for label, p in candidates.items()} | candidates)
    return scores


def order_clicks(targets: list[str], boxes: list[dict[str, Any]], scores: Scores) -> list[dict[str, Any]]:
    """One click per target, in the targets' order: the centre of its best-matching box."""
    pairs = sorted(((per_box.get(t, per_box.get(t.lower(), 0.0)), -i, -j) for i, t in enumerate(targets)
                    for j, per_box in enumerate(scores)), reverse=True)
    chosen: dict[int, tuple[int, float]] = {}
    used: set[int] = set()
    for score, i, j in pairs:
        if score > 0 and -i not in chosen and -j not in used:
            chosen[-i] = (-j, score)
            used.add(-j)
    missing = [t for i, t in enumerate(targets) if i not in chosen]
    if missing:
        found = ", ".join(sorted({b["label"] for b in boxes})) or "nothing"
        raise TargetNotFound(f"no box matches {', '.join(repr(m) for m in missing)} "
                             f"(detected: {found})")
    clicks = []
    for i, target in enumerate(targets):
        j, score = chosen[i]
        box = boxes[j]
        clicks.append({"target": target, "x": round((box["x1"] + box["x2"]) / 2, 1),
                       "y": round((box["y1"] + box["y2"]) / 2, 1), "score": round(float(score), 6)})
    return clicks
