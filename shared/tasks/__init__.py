"""The task types and their registry: each type's rules live in a module of its own (shared.tasks.nli, ...).

Adding a task type: write its module (a `TaskRules` subclass and its `RULES`), add a member below and its entry in
`_RULES`. Code elsewhere asks `task.rules` and never branches on a task by name; a task without rules is an error.
"""

from __future__ import annotations

from enum import StrEnum

from shared.tasks import conversation, math, nli, nlu_qa, summarization
from shared.tasks.base import TaskRules


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
    def rules(self) -> TaskRules:
        """Everything about this task type (shared.tasks.base.TaskRules)."""
        return _RULES[self]


_RULES: dict[Task, TaskRules] = {
    Task.NLI: nli.RULES,
    Task.NLU_QA: nlu_qa.RULES,
    Task.MATH: math.RULES,
    Task.CONVERSATION: conversation.RULES,
    Task.SUMMARIZATION: summarization.RULES,
}
