"""MATH: word problems whose answer is a plain number.

Fractions ("3/4", "\\frac{3}{4}") are evaluated exactly: one with a terminating decimal becomes that decimal
("3/4" -> "0.75", "6/3" -> "2"); any other ("1/3") is NOT_A_NUMBER, as is "1e3".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction

from shared.reasons import Reason
from shared.tasks.base import AnswerRules, Problem, shown_value
from shared.tasks.reading import clean, plain, shown

_NUMBER_TOKEN = r"([-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?)(?![\w/]|[.,:-]\d)"  # not "1e3", "1,5", "7:30"
_NUMBER = re.compile(r"(?<![\w./-])(?<!\d[,:])" + _NUMBER_TOKEN)
_LEADING_NUMBER = re.compile(r"\s*" + _NUMBER_TOKEN)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_CURRENCY = re.compile(r"[$€£]")
_REFERENCE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")  # 27, -3, 7.5, 1,000


class Math(AnswerRules):
    name = "MATH"
    min_rows = 40
    problems = "math word problems"
    answer_spec = "a plain number with no units, words or symbols, for example 42 or -3.5"
    wanted = "number"

    def reference_problem(self, answer: str, question: str) -> str | None:
        return None if _REFERENCE.fullmatch(answer) else f"reference answer {shown_value(answer)} is not a number"

    def first_line_answers(self, line: str) -> bool:
        """"7 apples" answers a MATH question, "Step 1" does not."""
        return bool(_LEADING_NUMBER.match(_THOUSANDS.sub("", clean(line))))

    def answer(self, value: str, question: str) -> str | Problem:
        """A plain decimal: "1,000" -> "1000", "$7.50" -> "7.5", "x = 7" -> "7", "3 apples" -> "3"."""
        text = _CURRENCY.sub("", _THOUSANDS.sub("", value)).rsplit("=", 1)[-1]
        leading = _LEADING_NUMBER.match(text)
        tokens = [leading.group(1)] if leading else _NUMBER.findall(text)
        if len(tokens) != 1:
            return Problem(Reason.NOT_A_NUMBER, f"answer '{shown(value)}' is not a plain number")
        number = _exact_decimal(tokens[0])
        if number is None:
            return Problem(Reason.NOT_A_NUMBER, f"answer '{shown(value)}' has no exact decimal value")
        return number

    def mentions(self, prose: str) -> Iterator[str]:
        """The last number of the reply."""
        yield from _NUMBER.findall(_THOUSANDS.sub("", plain(prose)))[-1:]

    def test_answer(self, user: str) -> str:
        return "0"

    def wrong_answer(self, answer: str, user: str) -> str:
        return "abc"


def _exact_decimal(token: str) -> str | None:
    """A number or fraction as a decimal ("+7.50" -> "7.5", "3/4" -> "0.75"), None if it has none ("1/3")."""
    numerator, _, denominator = token.replace(" ", "").partition("/")
    try:
        value = Fraction(numerator) / Fraction(denominator or 1)
        places, rest = 0, value.denominator
        for prime in (2, 5):  # a fraction ends as a decimal when its denominator has no other factor
            count = 0
            while rest % prime == 0:
                rest, count = rest // prime, count + 1
            places = max(places, count)
        if rest != 1:
            return None
        digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    except (ValueError, ZeroDivisionError):  # ValueError: more digits than Python converts
        return None
    whole, fraction = digits[: len(digits) - places], digits[len(digits) - places:]
    return ("-" if value < 0 else "") + whole + (f".{fraction}" if fraction else "")


RULES = Math()
