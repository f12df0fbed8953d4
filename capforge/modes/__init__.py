"""The mode registry: MODE name -> Mode class. Adding a mode is one file and one entry here."""

from __future__ import annotations

from typing import Any, Mapping

from capforge.data.charset import Charset
from capforge.data.labels import LabelHook, LabelReader
from capforge.errors import NotBuiltError
from capforge.modes.base import Input, Mode, Prediction, accepted
from capforge.modes.ctc import CTCMode
from capforge.modes.ctc_tiny import CTCTinyMode
from capforge.modes.efficientdet import EfficientDetMode
from capforge.modes.grid import GridMode
from capforge.modes.num_classes import NumClassesMode
from capforge.modes.ordinary import OrdinaryMode
from capforge.modes.rotate import RotateMode
from capforge.modes.slider import SliderMode

MODE_CLASSES: dict[str, type[Mode]] = {
    cls.name: cls for cls in (OrdinaryMode, NumClassesMode, CTCMode, CTCTinyMode, EfficientDetMode, RotateMode,
                                  SliderMode, GridMode)
}

__all__ = ["MODE_CLASSES", "Input", "Mode", "Prediction", "accepted", "label_reader", "make_mode", "recorded_mode", "summary_text"]


def label_reader(settings: Mapping[str, Any], hook: LabelHook | None = None) -> LabelReader:
    """The LabelReader for a workspace's MODE: class sub-folders label images where the mode says so."""
    return LabelReader(settings, hook, MODE_CLASSES[settings["MODE"]].labels_by_folder)


def make_mode(name: str, charset: Charset, settings: Mapping[str, Any], label_width: int) -> Mode:
    """The Mode object for MODE ``name``."""
    if name not in MODE_CLASSES:
        raise NotBuiltError(f"MODE={name} is not built yet; built modes: {', '.join(MODE_CLASSES)}")
    return MODE_CLASSES[name](charset, settings, label_width)


def summary_text(report: Mapping[str, Any]) -> str:
    """A short readable summary of a test report, in the words of the mode that wrote it."""
    return MODE_CLASSES.get(report.get("mode", ""), Mode).summary(report)


def recorded_mode(record: Mapping[str, Any]) -> Mode:
    """The Mode a training record or an export manifest describes (both carry the same keys)."""
    return make_mode(record["mode"], Charset.from_dict(record["charset"]), record["settings"], record["label_width"])
