"""Answer rules: what a text model's reading becomes before a site gets it (``ANSWER`` in
settings). 'text' answers the reading itself; 'arithmetic' answers the result of the expression
the model read (``12+15`` -> ``27``, ``九减四`` -> ``5``) and keeps the reading beside it.

A rule is one class here and one entry in ``RULES``; the text modes declare the ``ANSWER``
option, so a rule works with every mode that reads text and is refused by the others.
"""

from __future__ import annotations

import re
from dataclasses import replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Mapping

from capforge.data.numerals import DIGITS, UNITS, chinese_number
from capforge.options import SERVE, Option

if TYPE_CHECKING:  # base asks this module for the rule; the rule only rewrites its answers
    from capforge.modes.base import Prediction

# What a reading may spell, token by token: operators in every form sites draw, then numbers.
OPERATORS = {"+": "+", "＋": "+", "加": "+", "-": "-", "－": "-", "−": "-", "—": "-", "减": "-",
             "×": "*", "x": "*", "X": "*", "*": "*", "＊": "*", "乘": "*", "÷": "/", "/": "/", "／": "/", "除": "/"}
FILLERS = ("以",)  # 乘以, 除以: the same operator
ENDINGS = ("=", "＝", "?", "？", "等于", "是", "几", "多少")  # what follows the expression: asked, not read
RESULT_DECIMALS = 2  # a division that does not come out even is answered to two decimals, as sites print it


def tokenize(reading: str) -> list[Any] | None:
    """The numbers (Fractions) and operators of ``reading``, or None when it is not arithmetic."""
    text = re.sub(r"\s+", "", reading)
    for ending in sorted(ENDINGS, key=len, reverse=True):  # the asked part: '=?', '等于几'
        text = text.replace(ending, " ")
    text = text.rstrip()
    if " " in text:
        return None  # an '=' or '?' in the middle: not one expression
    tokens: list[Any] = []
    number = ""
    for c in text:
        if c in DIGITS or c in UNITS:
            number += c
            continue
        if number:
            tokens.append(number)
            number = ""
        if c in OPERATORS:
            tokens.append(OPERATORS[c])
        elif c not in FILLERS:
            return None
    if number:
        tokens.append(number)
    out: list[Any] = []
    for token in tokens:
        if token in "+-*/":
            out.append(token)
            continue
        value = int(token) if token.isdigit() else chinese_number(token)  # ASCII and full-width digits
        if value is None:
            return None
        out.append(Fraction(value))
    return out


def evaluate(reading: str) -> Fraction | None:
    """The value of the expression ``reading`` spells (``×`` and ``÷`` before ``+`` and ``-``; a
    leading minus negates), or None when it does not parse or divides by zero."""
    tokens = tokenize(reading)
    if not tokens:
        return None
    if tokens[0] == "-":
        tokens = [Fraction(0)] + tokens
    numbers, operators = tokens[0::2], tokens[1::2]
    if len(numbers) != len(operators) + 1 or not all(isinstance(n, Fraction) for n in numbers) \
            or not all(isinstance(o, str) for o in operators) or not operators:
        return None  # a number alone is no expression: a reader that dropped the operator is wrong
    terms, signs = [numbers[0]], []
    for op, value in zip(operators, numbers[1:]):
        if op in "*/":
            if op == "/" and value == 0:
                return None
            terms[-1] = terms[-1] * value if op == "*" else terms[-1] / value
        else:
            terms.append(value)
            signs.append(op)
    total = terms[0]
    for sign, term in zip(signs, terms[1:]):
        total = total + term if sign == "+" else total - term
    return total


def formatted(value: Fraction) -> str:
    """A result as sites expect it: an integer, or a decimal without trailing zeros."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.{RESULT_DECIMALS}f}".rstrip("0").rstrip(".")


class Rule:
    """Text answered as read."""

    name = "text"
    # The fields the rule adds to every answer (name -> what it means).
    answer_fields: Mapping[str, str] = {}
    # Whether the generator draws expressions for it (gen_sample_by_captcha.py).
    draws_expressions = False
    # What labels it answers, for the check step's message.
    reads = "any text"
    # What gen_sample_by_captcha.py draws from where neither --charset nor CHARSET is given.
    sample_charset = "0123456789abcdefghijklmnopqrstuvwxyz"

    def answer(self, prediction: "Prediction") -> "Prediction":
        """``prediction`` (the model's reading) as the site wants it."""
        return prediction

    def answer_of(self, label: str) -> str | None:
        """What the site wants for an image labelled ``label``; None: a label this rule cannot answer."""
        return label


class Arithmetic(Rule):
    """The result of the expression read; a reading that is no expression gets confidence 0."""

    name = "arithmetic"
    answer_fields = {"reading": "the expression the model read, e.g. '12+15'",
                     "rule": "the answer rule that turned the reading into the result ('arithmetic')"}
    draws_expressions = True
    reads = "an expression such as '12+15', '7×3=?' or '九减四'"
    sample_charset = "0123456789+-×÷"

    def answer(self, prediction: "Prediction") -> "Prediction":
        value = evaluate(prediction.text)
        fields = prediction.fields | {"reading": prediction.text, "rule": self.name}
        if value is None:
            return replace(prediction, text="", confidence=0.0, fields=fields)
        return replace(prediction, text=formatted(value), fields=fields)

    def answer_of(self, label: str) -> str | None:
        value = evaluate(label)
        return None if value is None else formatted(value)


RULES: dict[str, Rule] = {rule.name: rule for rule in (Rule(), Arithmetic())}

ANSWER = Option("ANSWER", "text", str, "what the answer's result is: 'text' (what the model read) or "
                "'arithmetic' (the result of the expression read, the reading beside it)", SERVE, choices=RULES.keys())


def rule_of(settings: Mapping[str, Any]) -> Rule:
    """The answer rule ``settings`` pick (text where the mode has none)."""
    return RULES[settings.get("ANSWER", "text")]
