"""GRID: photo-grid captchas (12306 and the like): "click every picture of <prompt>".

The workspace trains a tile classifier exactly as NUM_CLASSES does (tiles in class folders);
answering a whole captcha cuts it into the tiles GRID names, classifies them in one batch, and
answers the indices of the tiles whose probability of the prompt's class is at least
CLICK_SHARE (the likeliest tile where none is: a grid always asks for one). The prompt is read
from the captcha's GRID_PROMPT box by PROMPT_MODEL (another workspace's export), or sent by the
crawler as ``prompt``. ``test.py`` adds, for whole captchas in data/grid/ with their answers, the
share answered exactly and per-tile precision and recall.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from capforge.data.images import iter_images, open_image
from capforge.errors import DataError, TargetNotFound
from capforge.modes.base import Prediction
from capforge.modes.num_classes import NumClassesMode
from capforge.options import DATA, SERVE, Option

# 12306's layout, the grid captcha most crawlers meet: 2 rows of 4 tiles of 67 pixels, 72 apart,
# the first at (5, 41) of its 293 x 190 image, and the prompt's words right of its fixed sentence.
GRID_12306 = (2, 4, 5, 41, 67, 67, 72, 72)
PROMPT_12306 = (115, 0, 293, 30)
ANSWERS_FILES = ("answers.txt", "test_ans.txt")  # whole captchas' tiles to click: "<name>:<indices>"
PROMPTS_FILE = "prompts.txt"  # "<name>:<prompt>", where no PROMPT_MODEL reads the prompts
MIN_LIKENESS = 0.4  # a read prompt is taken for the likeliest class name when at least this alike (difflib ratio)


def tile_boxes(grid: tuple[Any, ...]) -> list[tuple[int, int, int, int]]:
    """The (x1, y1, x2, y2) of each tile, row by row: GRID as boxes, or as (rows, columns, left,
    top, tile width, tile height, step x, step y)."""
    if grid and all(isinstance(box, (tuple, list)) for box in grid):
        return [tuple(int(v) for v in box) for box in grid]  # type: ignore[misc]
    rows, columns, left, top, width, height, step_x, step_y = (int(v) for v in grid)
    return [(left + c * step_x, top + r * step_y, left + c * step_x + width, top + r * step_y + height)
            for r in range(rows) for c in range(columns)]


def grid_problem(grid: Any) -> str | None:
    """Why GRID cannot name tiles, or None."""
    numbers = lambda values, n: len(values) == n and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          and v >= 0 for v in values)  # noqa: E731
    if grid and all(isinstance(box, (tuple, list)) for box in grid):
        bad = [box for box in grid if not numbers(box, 4) or box[2] <= box[0] or box[3] <= box[1]]
        return f"GRID boxes must each be (x1, y1, x2, y2) with x2 > x1 and y2 > y1; received {bad[0]!r}" if bad else None
    if not numbers(grid, 8) or min(grid[:2]) < 1 or min(grid[4:6]) < 1:
        return ("GRID must be (rows, columns, left, top, tile width, tile height, step x, step y), e.g. "
                f"{GRID_12306} for 12306, or a tuple of (x1, y1, x2, y2) tile boxes; received {grid!r}")
    return None


def prompt_shares(boxes: list[dict[str, Any]], prompt: str) -> list[float]:
    """Each tile's probability of the class ``prompt`` names, from its top classes (0 where absent)."""
    wanted = prompt.strip().lower()
    return [next((c["confidence"] for c in box["top"] if c["label"].lower() == wanted), 0.0) for box in boxes]


def read_answers(folder: Path, name: str) -> dict[str, str]:
    """``folder/name`` as {image stem: value}: lines ``<name or stem>:<value>`` (or a tab); ``#`` comments."""
    path = folder / name
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        if line.startswith("#"):
            continue
        key, sep, value = line.partition("\t" if "\t" in line else ":")
        if sep and key.strip():
            out[Path(key.strip()).stem] = value.strip()
    return out


class GridMode(NumClassesMode):
    name = "GRID"
    learns_unlabelled = False  # a crawler captures whole grids, not the tiles the model learns
    takes_prompt = True  # a crawler may send the prompt (the class to click)
    cuts_image = True
    companion = "PROMPT_MODEL"
    options = NumClassesMode.options + (
        Option("GRID", GRID_12306, tuple, "the tiles of a whole captcha, in its pixels: (rows, columns, left, top, "
               "tile width, tile height, step x, step y), or a tuple of (x1, y1, x2, y2) boxes; default: 12306's "
               "2 x 4", DATA),
        Option("GRID_PROMPT", PROMPT_12306, tuple, "the box (x1, y1, x2, y2) of the prompt that PROMPT_MODEL reads",
               DATA),
        Option("PROMPT_MODEL", "", str, "a workspace whose export reads the prompt's box (its class or text is "
               "the class to click), e.g. 'works/site_prompt', or 'ddddocr' (a pretrained reader of printed "
               "words); empty: crawlers send 'prompt'", SERVE),
        Option("CLICK_SHARE", 0.5, float, "a tile is clicked when its probability of the prompt's class is at "
               "least this (the likeliest tile where none is)", SERVE, minimum=0.01, maximum=0.99),
    )
    serving_settings = ("GRID", "GRID_PROMPT", "CLICK_SHARE")
    answer_fields = {"tiles": "the indices of the tiles to click (row by row from 0), where the prompt is known",
                     "prompt": "the class to click, as read from the captcha or sent",
                     "prompt_confidence": "the prompt reader's confidence (1 where the prompt was sent)",
                     "prompt_read": "what PROMPT_MODEL read, before it was taken for the likeliest class name"}

    @classmethod
    def settings_problem(cls, values: Mapping[str, Any]) -> str | None:
        problem = grid_problem(values["GRID"])
        prompt = values["GRID_PROMPT"]
        if not problem and prompt and grid_problem((tuple(prompt),)):
            problem = f"GRID_PROMPT must be (x1, y1, x2, y2) or (); received {prompt!r}"
        if not problem and values["PROMPT_MODEL"] and not prompt:
            problem = "PROMPT_MODEL reads the prompt from GRID_PROMPT, which is (): give its box (x1, y1, x2, y2)"
        return problem or super().settings_problem(values)

    def answer_image(self, image: Any, predict: Callable[[list[Any]], list[Prediction]], companion: Any = None,
                     prompt: Any = None) -> Prediction:
        """The whole captcha's answer: every tile classified (boxes, with each tile's top classes);
        with a prompt (one class sent, or read by ``companion`` from GRID_PROMPT) the tiles to click.
        A list of classes sent is answered by ``clicks`` alone, one class at a time."""
        prompt = prompt if isinstance(prompt, str) else None
        image = image.convert("RGB")
        boxes = tile_boxes(self.settings["GRID"])
        tiles = predict([image.crop(box) for box in boxes])
        out = [{"index": i, "label": t.text, "score": round(t.confidence, 6), "x1": b[0], "y1": b[1], "x2": b[2],
                "y2": b[3], "top": [{"label": c, "confidence": round(p, 6)} for c, p in t.top]}
               for i, (t, b) in enumerate(zip(tiles, boxes))]
        confidence, fields = 1.0, {"tiles": None, "prompt": prompt, "prompt_confidence": 1.0 if prompt else None}
        if prompt is None and companion is not None and self.settings["GRID_PROMPT"]:
            reading = companion.predict([image.crop(tuple(self.settings["GRID_PROMPT"]))])[0]
            prompt, likeness = self.known_class(reading.text)
            confidence = reading.confidence * likeness
            fields |= {"prompt": prompt, "prompt_confidence": round(confidence, 6), "prompt_read": reading.text}
        if prompt is None:  # each tile's class; the crawler sends the prompt for the tiles to click
            return Prediction(",".join(t.text for t in tiles), math.prod(t.confidence for t in tiles),
                              [(t.text, t.confidence) for t in tiles], boxes=out, candidates=out, fields=fields)
        shares = prompt_shares(out, prompt)
        for box, share in zip(out, shares):  # each tile's probability of the prompt's class, sent with the answer
            box["prompt_share"] = share
        chosen, sure = self.choose(shares)
        return Prediction(" ".join(str(i) for i in chosen), confidence * sure,
                          [(str(i), shares[i]) for i in chosen], boxes=out, candidates=out,
                          fields=fields | {"tiles": chosen})

    def known_class(self, reading: str) -> tuple[str, float]:
        """The tile class a prompt reader's ``reading`` names, and how alike they are (0-1): a
        reader of printed words (ddddocr) misreads a character of a decorated prompt, but the
        prompt is always one of the classes the tiles were trained on."""
        likeness = {name: difflib.SequenceMatcher(None, reading, name).ratio() for name in self.charset.symbols}
        best = max(likeness, key=likeness.get)
        return (best, likeness[best]) if likeness[best] >= MIN_LIKENESS else (reading, 0.0)

    def choose(self, shares: list[float]) -> tuple[list[int], float]:
        """The tiles to click, given each tile's probability of the prompt's class (``shares``),
        and how sure every tile's decision is together: those at CLICK_SHARE or more; the
        likeliest tile where none is."""
        chosen = [i for i, share in enumerate(shares) if share >= self.settings["CLICK_SHARE"]]
        if not chosen:
            chosen = [max(range(len(shares)), key=shares.__getitem__)]
        sure = math.prod(share if i in chosen else 1 - share for i, share in enumerate(shares))
        return chosen, sure

    def clicks(self, image: Any, boxes: list[dict[str, Any]], prompt: str | list[str],
               recognizer: Any = None) -> list[dict[str, Any]]:
        """The centre of every tile to click for ``prompt`` (one class; a list of classes: each)."""
        targets = [prompt] if isinstance(prompt, str) else prompt
        out = []
        for target in targets:
            shares = prompt_shares(boxes, target)
            chosen, _ = self.choose(shares)
            if not any(shares[i] > 0 for i in chosen):
                raise TargetNotFound(f"no tile may be {target!r} (the classes this model knows: "
                                     f"{', '.join(self.charset.symbols[:20])}{' ...' if self.charset.size > 20 else ''})")
            out += [{"target": target, "x": (boxes[i]["x1"] + boxes[i]["x2"]) / 2, "y": (boxes[i]["y1"] + boxes[i]["y2"]) / 2,
                     "score": shares[i]} for i in chosen]
        return out

    def whole_report(self, workspace: Any, settings: Mapping[str, Any], predictor: Any,
                     companion: Any = None) -> dict[str, Any] | None:
        """For whole captchas in data/grid/ with their answers (answers.txt): the share answered
        exactly, per-tile precision and recall, and each captcha's answer; None without them."""
        folder = workspace.data / "grid"
        answers = next((a for a in (read_answers(folder, n) for n in ANSWERS_FILES) if a), {})
        if not answers:
            return None
        prompts = read_answers(folder, PROMPTS_FILE)  # sent, or (with PROMPT_MODEL) what its readings should be
        if not prompts and companion is None:
            raise DataError(f"{workspace.relative(folder)} has answers but nothing gives the prompts: add "
                            f"{PROMPTS_FILE} (<name>:<class to click>) or set PROMPT_MODEL")
        rows, hits, clicked, wanted = [], 0, 0, 0
        for path in iter_images(folder):
            if path.stem not in answers:
                continue
            truth = sorted(int(i) for i in re.findall(r"\d+", answers[path.stem]))
            given = None if companion is not None else prompts.get(path.stem)
            answer = self.answer_image(open_image(path), predictor.predict, companion, given)
            tiles = answer.fields["tiles"]
            right = set(tiles) & set(truth)
            hits, clicked, wanted = hits + len(right), clicked + len(tiles), wanted + len(truth)
            rows.append({"path": str(path), "truth": truth, "tiles": tiles, "exact": tiles == truth,
                         "prompt": answer.fields["prompt"], "prompt_right": answer.fields["prompt"] == prompts[path.stem]
                         if companion is not None and path.stem in prompts else None,
                         "confidence": round(answer.confidence, 6),
                         "per_tile": [{"index": b["index"], "label": b["label"], "score": b["score"],
                                       "prompt_share": b["prompt_share"]} for b in answer.boxes or []]})
        if not rows:
            raise DataError(f"no image of {workspace.relative(folder)} is named in its answers file")
        checked = [r["prompt_right"] for r in rows if r["prompt_right"] is not None]
        return {"grid": {"captchas": len(rows), "exact": sum(r["exact"] for r in rows) / len(rows),
                         "tile_precision": hits / max(1, clicked), "tile_recall": hits / max(1, wanted),
                         "prompts": "read by PROMPT_MODEL" if companion is not None else "sent (prompts.txt)",
                         "prompts_read_right": sum(checked) / len(checked) if checked else None, "answers": rows}}

    @classmethod
    def summary(cls, report: Mapping[str, Any]) -> str:
        text = super().summary(report)
        grid = report.get("grid")
        if not grid:
            return text + "\nwhole captchas: none (put captchas and answers.txt in data/grid/ to measure them)"
        read = "" if grid.get("prompts_read_right") is None else f", {grid['prompts_read_right']:.4f} of them right"
        return (text + f"\nwhole captchas: {grid['captchas']}, answered exactly {grid['exact']:.4f} (prompts "
                f"{grid['prompts']}{read}); tiles clicked: precision {grid['tile_precision']:.4f}, recall "
                f"{grid['tile_recall']:.4f}; {predicted_exact(report['sequence_accuracy'], grid)}")


def predicted_exact(single: float, grid: Mapping[str, Any]) -> str:
    """What a single-tile accuracy predicts for whole captchas: each tile to click found with that
    chance (and no other tile clicked), and the stricter every tile's class read right."""
    found = sum(single ** len(row["truth"]) for row in grid["answers"]) / len(grid["answers"])
    tiles = len(grid["answers"][0]["per_tile"])
    return (f"single-tile accuracy {single:.4f} predicts {found:.4f} (each tile to click found with that chance) "
            f"and {single ** tiles:.4f} (all {tiles} tiles read right)")
