"""NLI: how a hypothesis relates to a premise; the answer is one of three labels."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from shared.reasons import Reason
from shared.tasks.base import AnswerRules, Problem, shown_value
from shared.tasks.reading import shown

LABELS = ("entailment", "contradiction", "neutral")
_ALTERNATIVES = "|".join(LABELS)
_LEADING_LABEL = re.compile(rf"^[\W_]*({_ALTERNATIVES})\b", re.IGNORECASE)
_LABEL_WORD = re.compile(  # a label, with the negation right before it if any ("isn't a contradiction")
    rf"(?P<negation>(?:\b(?:not|no|never)|n't)\s+(?:(?:a|an|the)\s+)?)?\b(?P<label>{_ALTERNATIVES})\b",
    re.IGNORECASE)


def _either(words: Iterable[str]) -> str:
    """"a, b or c"."""
    *first, last = words
    return f"{', '.join(first)} or {last}"


class Nli(AnswerRules):
    name = "NLI"
    problems = "natural language inference problems (how a hypothesis relates to a premise)"
    answer_spec = "exactly one of the labels " + _either(f'"{label}"' for label in LABELS)
    wanted = f"{_either(LABELS)} label"

    def reference_problem(self, answer: str, question: str) -> str | None:
        if answer.lower() in LABELS:
            return None
        return f"reference answer {shown_value(answer)} is not one of {', '.join(LABELS)}"

    def answer(self, value: str, question: str) -> str | Problem:
        """A label: the one the answer opens with, else the only one it names and does not negate."""
        if match := _LEADING_LABEL.match(value):
            return match.group(1).lower()
        labels = _affirmed_labels(value)
        if len(labels) == 1:
            return labels.pop()
        return Problem(Reason.INVALID_LABEL, f"label '{shown(value)}' is not one of {', '.join(LABELS)}")

    def mentions(self, prose: str) -> Iterator[str]:
        """A label the reply opens with, then the only label it names without negating it."""
        if match := _LEADING_LABEL.match(prose):
            yield match.group(1)
        labels = _affirmed_labels(prose)
        if len(labels) == 1:
            yield labels.pop()

    def test_answer(self, user: str) -> str:
        return "neutral"

    def wrong_answer(self, answer: str, user: str) -> str:
        """The next label: well formed, and wrong."""
        index = LABELS.index(answer) if answer in LABELS else 0
        return LABELS[(index + 1) % len(LABELS)]


def _affirmed_labels(text: str) -> set[str]:
    """The labels the text names, leaving out negated ones ("not entailment")."""
    return {match["label"].lower() for match in _LABEL_WORD.finditer(text) if not match["negation"]}


RULES = Nli()
