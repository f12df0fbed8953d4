"""One setting's declaration: its default, the type and range it accepts, and what it means.

Below both the settings table (capforge.settings) and the modes, which declare their own options
(``Mode.options``) for that table to gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection

# The sections of a settings file, in order.
DATA, MODEL, TRAIN, SERVE, LOOP = "Data and labels", "Model", "Training", "Serving", "Review and retrain"


@dataclass(frozen=True)
class Option:
    """One setting: its default, the type and range it accepts, and what it means."""

    name: str
    default: Any
    kind: type | tuple[type, ...]
    help: str
    section: str
    choices: Collection[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def allowed(self) -> str:
        """Describe the accepted values, e.g. ``an integer from 8 to 1024``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        names = {bool: "True or False", int: "an integer", float: "a number", str: "a string",
                 list: "a list of strings", tuple: "a tuple"}
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        text = " or ".join(names[k] for k in kinds)
        if self.minimum is not None and self.maximum is not None:
            text += f" from {self.minimum} to {self.maximum}"
        elif self.minimum is not None:
            text += f" of at least {self.minimum}"
        return text

    def accepts_str(self) -> bool:
        """True when a plain string is a valid type for this option."""
        return str in (self.kind if isinstance(self.kind, tuple) else (self.kind,))

    def problem(self, value: Any) -> str | None:
        """Return why ``value`` is not acceptable, or None when it is."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        ok_type = any(_is_kind(value, k) for k in kinds)
        if not ok_type or (self.choices is not None and value not in self.choices):
            return f"{self.name} must be {self.allowed()}; received {value!r} ({type(value).__name__})"
        if self.minimum is not None and value < self.minimum or (
            self.maximum is not None and value > self.maximum
        ):
            return f"{self.name} must be {self.allowed()}; received {value!r}"
        if isinstance(value, list):
            if not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
                return f"{self.name} must be a list of distinct non-empty strings; received {value!r}"
        return None


def _is_kind(value: Any, kind: type) -> bool:
    """isinstance that keeps bools out of the numbers and lets ints stand for floats."""
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)
