"""The five task types and the facts each one carries."""

from __future__ import annotations

import re
from enum import StrEnum


class Task(StrEnum):
    NLI = "NLI"
    NLU_QA = "NLU_QA"
    MATH = "MATH"
    CONVERSATION = "CONVERSATION"
    SUMMARIZATION = "SUMMARIZATION"

    @classmethod
    def parse(cls, value: str) -> Task:
        """Accept any casing and `-` for `_` ("nlu-qa", "Math")."""
        key = value.strip().upper().replace("-", "_")
        try:
            return cls(key)
        except ValueError:
            known = ", ".join(t.value for t in cls)
            raise ValueError(f"unknown task {value!r}: expected one of {known}") from None

    @property
    def single_turn(self) -> bool:
        """Every task but CONVERSATION is one system + one user message."""
        return self is not Task.CONVERSATION

    @property
    def default_min_rows(self) -> int:
        """The managed service's minimum rows per file."""
        return 40 if self is Task.MATH else 65

    @property
    def allows_chain_of_thought(self) -> bool:
        return self not in (Task.CONVERSATION, Task.SUMMARIZATION)

    @property
    def allows_chain_of_density(self) -> bool:
        return self is Task.SUMMARIZATION


NLI_LABELS = ("entailment", "contradiction", "neutral")
DEFAULT_MAX_LEN_SUMMARY = 80

_CHOICE_LINE = re.compile(r"^\s*\(?([A-Z])[).:]\s+(.+?)\s*$", re.MULTILINE)


def choice_options(question: str) -> dict[str, str]:
    """The options of a multiple-choice question, letter -> text, from lines such as "(A) bank" or "B. library".

    The first line for a letter wins; the order is the question's.
    """
    options: dict[str, str] = {}
    for match in _CHOICE_LINE.finditer(question):
        options.setdefault(match.group(1), match.group(2))
    return options


def choice_letters(question: str) -> list[str]:
    """The option letters of a multiple-choice question, in order."""
    return list(choice_options(question))
