"""Chinese numerals, read (ANSWER = 'arithmetic' parses them) and written (the generator draws
them). Written here: a few dozen lines, where cn2an would add a dependency tree."""

from __future__ import annotations

CHINESE_DIGITS = "零一二三四五六七八九"
# Digits as sites draw them: ASCII, full-width, Chinese (and their financial forms).
DIGITS = {**{str(i): i for i in range(10)}, **{chr(0xFF10 + i): i for i in range(10)},
          **dict(zip(CHINESE_DIGITS, range(10))), **dict(zip("〇壹贰叁肆伍陆柒捌玖", range(10))), "两": 2}
UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}


def chinese_number(text: str) -> int | None:
    """``text`` in Chinese numerals (``十二`` 12, ``二十`` 20, ``一百零五`` 105, or digit by digit
    ``一二`` 12), or None."""
    if not text or any(c not in DIGITS and c not in UNITS for c in text):
        return None
    if not any(c in UNITS for c in text):
        return int("".join(str(DIGITS[c]) for c in text))
    total, digit = 0, None
    for c in text:
        if c in DIGITS:
            if digit is not None and DIGITS[c] != 0:
                return None  # two digits in a row inside a unit number: not a number
            digit = DIGITS[c] or None
        else:
            total += (1 if digit is None else digit) * UNITS[c]
            digit = None
    return total + (digit or 0)


def chinese_numeral(number: int) -> str:
    """``number`` (0-99) in Chinese numerals as sites draw them: 九, 十二, 二十, 四十五.

    >>> [chinese_numeral(n) for n in (0, 9, 12, 20, 45)]
    ['零', '九', '十二', '二十', '四十五']
    """
    tens, ones = divmod(number, 10)
    if not tens:
        return CHINESE_DIGITS[ones]
    return ("" if tens == 1 else CHINESE_DIGITS[tens]) + "十" + (CHINESE_DIGITS[ones] if ones else "")
