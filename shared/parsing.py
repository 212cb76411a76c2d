"""Answer parsing: a teacher reply becomes the student's answer, or a stable reason why it cannot.

What every reply goes through here: one that did not stop is TRUNCATED, <think>...</think> blocks of reasoning models
are dropped (never kept as reasoning), and one with no text left is EMPTY. The rest is read by the task's own rules
(`task.rules.parse`, in shared.tasks): tolerant where the managed service is brittle, with reasons a row can be
rejected for that are stable codes (shared.reasons).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from shared.reasons import Reason
from shared.tasks.base import Accepted, Problem, Rejected
from shared.tasks.reading import excerpt

if TYPE_CHECKING:
    from shared.manifest.model import PromptSettings
    from shared.tasks import Task

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)


def parse_reply(task: Task, content: str | None, finish_reason: str | None, *, question: str,
                prompt: PromptSettings) -> Accepted | Rejected:
    """Check and normalise one teacher reply to a row of `task`.

    `question` is the row's last user message (NLU_QA reads its options there); `prompt` tells which reply
    format the teacher was asked for.
    """
    if finish_reason not in (None, "stop"):
        detail = f"the reply was cut off (finish_reason {finish_reason!r})"
        return Rejected(Reason.TRUNCATED, detail, excerpt(content))
    text = _THINK_BLOCK.sub("", content or "").strip()
    if not text:
        detail = "the reply holds only a <think> block" if (content or "").strip() else "the reply is empty"
        return Rejected(Reason.EMPTY, detail, excerpt(content))
    outcome = task.rules.parse(text, question, prompt)
    if isinstance(outcome, Problem):
        return Rejected(outcome.reason, outcome.detail, excerpt(content))
    return outcome
