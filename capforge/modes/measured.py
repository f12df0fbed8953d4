"""What the modes whose answer is a measure (an angle, a position), not a text, have in common:
the label is one number, no charset is learnt from it, every answer can be right, and no
softmax temperature calibrates it (the confidence is the probability near the answer)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from capforge.modes.base import Mode

NUMBER = r"[0-9]+(\.[0-9]+)?"  # a label that names a measure, as tf.strings.regex_full_match reads it


def number(label: str) -> float | None:
    """The measure a label names, or None when it is not a finite number."""
    try:
        value = float(label)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class MeasuredMode(Mode):
    """Base of SLIDER and ROTATE; subclasses set ``measure`` and say which numbers they accept."""

    uses_blank = False
    length_capped = False
    colour_matters = True
    calibrated = False

    @classmethod
    def tokens(cls, label: str) -> list[str]:
        return []  # a measure, not symbols: no charset or length to suggest

    @classmethod
    def label_width_for(cls, settings: Mapping[str, Any], labels: Sequence[str]) -> int:
        return 1

    def accepts(self, label: str) -> bool:
        value = number(label)
        return value is not None and value >= 0 and self.within(value)

    def within(self, value: float) -> bool:
        """Whether a non-negative measure is one this mode can learn."""
        return True

    def plausible(self, text: str, lengths: Sequence[int] | None) -> bool:
        return True  # every measure can be right

    @classmethod
    def summary(cls, report: Mapping[str, Any]) -> str:
        """The test report in words: mean, median and worst error, and the share within each tolerance."""
        unit = report["unit"]
        return "\n".join([
            f"model: {report['model']}",
            f"{report['split']}: {report['images']} images"
            + (f" ({len(report['skipped'])} skipped: unreadable or unlabelled)" if report["skipped"] else ""),
            f"mean error {report['mean_error']:.2f} {unit}   median {report['median_error']:.2f}   "
            f"worst {report['max_error']:.2f}",
            "within: " + ", ".join(f"{k} {unit}: {v:.3f}" for k, v in report["within"].items()),
            f"{report['ms_per_image']:.2f} ms per image (preprocessing included)",
            f"report: {report['report_path']}; pictures: reports/{report['split']}_worst.png (largest errors)"])

    def learnable(self, records: Any, parse: Any, labels: Sequence[str], pattern: str = NUMBER) -> tuple[Any, int]:
        """The serialized ``records`` whose label (``parse(record)[1]``) is a measure this mode
        learns, and how many of ``labels`` are: pack keeps what check_file.py flags."""
        import tensorflow as tf  # lazily: the server answers without TensorFlow

        usable = sum(self.accepts(label) for label in labels)
        if usable < len(labels):
            records = records.filter(lambda record: tf.strings.regex_full_match(parse(record)[1], pattern))
        return records, usable
