"""The models a server answers: every exported workspace, reloaded when re-exported."""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capforge.serve.batching import MicroBatcher
from capforge.serve.inputs import RequestError
from capforge.serve.predictor import MANIFEST, Predictor, companion_of
from capforge.errors import ImageError
from capforge.inbox import Inbox, Review
from capforge.modes import Prediction
from capforge.settings import Settings, load_settings
from capforge.workspace import SITE_NAME, Workspace

RELOAD_CHECK_SECONDS = 1.0


@dataclass
class ServedModel:
    """One loaded export with its batcher, answer cache and serving settings."""

    name: str
    workspace: Workspace
    predictor: Predictor
    settings: Settings
    stamp: float
    batcher: MicroBatcher
    recognizer: Any = None  # the mode's companion reader (CLICK_RECOGNIZER, PROMPT_MODEL): a Predictor, or ddddocr
    cache: OrderedDict = field(default_factory=OrderedDict)

    @property
    def version(self) -> str:
        """The export's time: which model gave an answer (kept with captured images)."""
        return self.predictor.manifest["exported_at"]

    @property
    def inbox(self) -> Inbox:
        """The workspace's review inbox (capforge.inbox), checked against the workspace's settings."""
        if self._inbox is None:
            self._inbox = Inbox(self.workspace, self.settings)
        return self._inbox

    _inbox: Inbox | None = None

    def answers(self, paths: list[Path]) -> list[tuple[str, float]]:
        """This model's (answer, confidence) for image files; ('', 0) for one it cannot read."""
        found = []
        for path in paths:
            try:
                prediction = self.predictor.predict([path])[0]
                found.append((prediction.text, prediction.confidence))
            except ImageError:
                found.append(("", 0.0))
        return found

    def review(self) -> Review:
        """A review pass over this workspace's inbox, pre-filled by this model."""
        return Review(self.inbox, self.answers, self.version)

    def cached(self, key: str) -> Prediction | None:
        """The decoded answer kept for the image whose content key is ``key`` (capforge.inbox.content_key)."""
        if not self.settings.CACHE_SIZE:
            return None
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        return None

    def remember(self, key: str, answer: Prediction) -> None:
        limit = self.settings.CACHE_SIZE
        if limit:
            self.cache[key] = answer
            while len(self.cache) > limit:
                self.cache.popitem(last=False)

    def describe(self) -> dict[str, Any]:
        m = self.predictor.manifest
        p = m["preprocessing"]
        return {"name": self.name, "mode": m["mode"], "charset_size": len(m["charset"]["symbols"]),
                "input_size": [p["height"], p["width"], p["channels"]], "exported_at": m["exported_at"]}


class ModelRegistry:
    """Exported workspaces under ``works`` (or just ``names``), keyed by site name."""

    def __init__(self, works: Path, names: list[str] | None = None, overrides: list[str] | None = None,
                 observe_batch: Any = None) -> None:
        self.works, self.names, self.overrides = Path(works), names, overrides or []
        self.observe_batch = observe_batch
        self.models: dict[str, ServedModel] = {}
        self.max_image_bytes = 0  # the largest MAX_IMAGE_BYTES of the models served
        self.checked = 0.0
        self.refresh(force=True)

    def _candidates(self) -> list[Workspace]:
        if self.names:
            return [Workspace(self.works / n) for n in self.names]
        return [Workspace(p.parent.parent.parent) for p in sorted(self.works.glob(f"*/exports/current/{MANIFEST}"))]

    def refresh(self, force: bool = False) -> None:
        """Load new exports and reload re-exported ones (checked at most once a second)."""
        now = time.monotonic()
        if not force and now - self.checked < RELOAD_CHECK_SECONDS:
            return
        self.checked = now
        for ws in self._candidates():
            manifest = ws.exports / "current" / MANIFEST
            try:
                stamp = manifest.stat().st_mtime
            except OSError:
                continue
            known = self.models.get(ws.name)
            if known and known.stamp == stamp:
                continue
            try:
                settings = load_settings(ws.root, self.overrides)
                predictor = Predictor(ws.exports / "current", settings.INFERENCE_THREADS or None, settings)
                recognizer = companion_of(predictor.mode, settings, self.works)
            except Exception as exc:  # noqa: BLE001 - any broken export: report it, keep what works
                print(f"warning: not loading {ws.name}: {exc}" + ("; still serving the previous export"
                                                                   if known else ""), file=sys.stderr)
                if known:
                    known.stamp = stamp  # do not retry the same broken files on every request
                continue
            batcher = MicroBatcher(predictor.probabilities, settings.MAX_BATCH, settings.BATCH_WAIT_MS,
                                   self.observe_batch)
            self.models[ws.name] = ServedModel(ws.name, ws, predictor, settings, stamp, batcher, recognizer)
        self.max_image_bytes = max((m.settings.MAX_IMAGE_BYTES for m in self.models.values()), default=2_000_000)

    def resolve(self, name: str | None) -> ServedModel:
        """The model called ``name``; without a name, the only model."""
        self.refresh()
        if name is None or name == "":
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise RequestError(400, "model_required", "several models are served; name one in 'model': "
                               + ", ".join(sorted(self.models)) if self.models else "no exported model is served")
        if not isinstance(name, str) or not SITE_NAME.match(name):
            raise RequestError(400, "invalid_model_name", f"invalid model name {str(name)[:80]!r}; names use "
                               "letters, digits, '_' and '-'")
        if name not in self.models:
            raise RequestError(404, "unknown_model", f"no model {name!r}; served: "
                               + (", ".join(sorted(self.models)) or "none"))
        return self.models[name]
