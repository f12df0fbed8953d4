"""The charset: the symbols a model outputs, saved with every model.

Text modes reserve id 0 for the blank (CTC's blank, ORDINARY's padding); symbol ``i`` of the
charset is id ``i + 1``. NUM_CLASSES has no blank: class ``i`` is id ``i``. The blank index is
chosen here, once, and handed to the loss and to decoding from this object.

>>> c = Charset(["a", "b", "c"], blank=0)
>>> c.encode("cab"), c.decode([3, 1, 2]), c.size
([3, 1, 2], 'cab', 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from capforge.errors import DataError


@dataclass(frozen=True)
class Charset:
    symbols: tuple[str, ...]
    blank: int | None = 0

    def __init__(self, symbols: Iterable[str], blank: int | None = 0) -> None:
        symbols = tuple(symbols)
        if not symbols:
            raise DataError("the charset is empty: set CHARSET or add labelled training images")
        if len(set(symbols)) != len(symbols):
            raise DataError(f"the charset repeats symbols: {symbols!r}")
        if blank not in (0, None):
            raise DataError(f"the blank index must be 0 or None; received {blank!r}")
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "blank", blank)

    @property
    def offset(self) -> int:
        return 0 if self.blank is None else 1

    @property
    def size(self) -> int:
        """Number of model outputs: the symbols plus the blank, if any."""
        return len(self.symbols) + self.offset

    def ids(self) -> list[int]:
        return [i + self.offset for i in range(len(self.symbols))]

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Symbol ids of ``tokens`` (a string's characters, or a list of class names)."""
        index = {s: i + self.offset for i, s in enumerate(self.symbols)}
        try:
            return [index[t] for t in tokens]
        except KeyError as exc:
            raise DataError(f"symbol {exc.args[0]!r} is not in the charset") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; the blank is dropped."""
        return "".join(self.symbol(i) for i in ids if i != self.blank)

    def symbol(self, i: int) -> str:
        return self.symbols[int(i) - self.offset]

    def to_dict(self) -> dict[str, Any]:
        return {"symbols": list(self.symbols), "blank": self.blank}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Charset":
        return cls(data["symbols"], data["blank"])
