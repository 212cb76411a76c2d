"""NLU_QA: multiple-choice questions whose options are lines such as "(A) bank"; the answer is an option letter.

A question without option lines accepts any letter: there is nothing to check it against.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from shared.reasons import Reason
from shared.tasks.base import AnswerRules, Problem, shown_value
from shared.tasks.reading import clean, shown

_CHOICE_LINE = re.compile(r"^\s*\(?([A-Z])[).:]\s+(.+?)\s*$", re.MULTILINE)
_LETTER = re.compile(  # "B", "b", "(B)", "[B]", "B) bank", "B. bank", "B because", "Option B"; not "I think"
    r"^(?:(?i:option|choice|letter|answer)\s*:?\s*)?[(\[]?"
    r"(?:([A-HJ-Z])(?![\w'’])|([A-Za-z])(?=$|[).:,\]]))")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_OPTION_WORD = re.compile(r"\b(?i:option|choice)\s+\(?([A-Z])\b")
_CAPITAL_WORD = re.compile(r"(?<![\w'’])([A-HJ-Z])(?![\w'’])")
_LONE_LETTER_LINE = re.compile(r"^[ \t*_>#-]*\(?([A-Z])\)?[.)]?[ \t*_]*$", re.MULTILINE)


def choice_options(question: str) -> dict[str, str]:
    """The options of a multiple-choice question, letter -> text, from lines such as "(A) bank" or "B. library".

    The first line for a letter wins; the order is the question's.
    """
    options: dict[str, str] = {}
    for match in _CHOICE_LINE.finditer(question):
        options.setdefault(match.group(1), match.group(2))
    return options


@functools.lru_cache(maxsize=256)
def _options(question: str) -> dict[str, str]:
    """The question's options, letter -> cleaned lower-case text (a reply is read several ways against them)."""
    return {letter: clean(text).casefold() for letter, text in choice_options(question).items()}


class NluQa(AnswerRules):
    name = "NLU_QA"
    problems = "multiple-choice questions"
    answer_spec = "the single capital letter of the correct option, for example \"B\""
    wanted = "option letter"

    def question_problems(self, question: str) -> list[tuple[str, str]]:
        letters = list(choice_options(question))
        if len(letters) < 2:
            return [("options", f'the question has {len(letters)} options; at least 2 lines such as "(A) ..." '
                                'are needed')]
        if letters != [chr(ord("A") + i) for i in range(len(letters))]:
            return [("options", f"options {', '.join(letters)} are not consecutive letters from A")]
        return []

    def reference_problem(self, answer: str, question: str) -> str | None:
        letters = list(choice_options(question))
        if answer.upper() in letters:
            return None
        return f"reference answer {shown_value(answer)} is not one of the options {letters[0]}–{letters[-1]}"

    def answer(self, value: str, question: str) -> str | Problem:
        """An option letter the question offers, upper case."""
        options = _options(question)
        letter = _letter_of(value, options)
        if letter is None:
            return Problem(Reason.INVALID_CHOICE, f"answer '{shown(value)}' does not name one option letter")
        if options and letter not in options:
            return Problem(Reason.INVALID_CHOICE,
                           f"choice '{letter}' is not one of the question's options {', '.join(options)}")
        return letter

    def mentions(self, prose: str) -> Iterator[str]:
        """The only option letter the reply names as "(C)", "option C" or a line of its own."""
        letters = {match.group(1) for pattern in (_PAREN_LETTER, _OPTION_WORD, _LONE_LETTER_LINE)
                   for match in pattern.finditer(prose)}
        if len(letters) == 1:
            yield letters.pop()

    def test_answer(self, user: str) -> str:
        return "A"

    def wrong_answer(self, answer: str, user: str) -> str:
        return "Z"


def _letter_of(value: str, options: dict[str, str]) -> str | None:
    """The letter an answer opens with ("b", "(B)", "B) bank", "Option B"), else the option whose exact text
    it is, else the only letter it names ("I'd pick B")."""
    if match := _LETTER.match(value):
        return (match.group(1) or match.group(2)).upper()
    by_text = {letter for letter, text in options.items() if text and text == value.casefold()}
    named = {match.group(1) for pattern in (_PAREN_LETTER, _OPTION_WORD, _CAPITAL_WORD)
             for match in pattern.finditer(value)}
    return next((letters.pop() for letters in (by_text, named) if len(letters) == 1), None)


RULES = NluQa()
