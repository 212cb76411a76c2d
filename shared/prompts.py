"""Teacher prompts: what the teacher is asked for each row.

Without chain of thought or density the teacher sees the row's own messages. With them, the row's system prompt is
replaced, for the teacher call only, by one of ours, which the task's rules word (shared.tasks). `PROMPT_VERSION`
changes whenever the wording of any of our prompts changes: it is part of the job id and of cache keys, so a new
wording never reuses replies to an old one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.rows import Message, Row
from shared.tasks.base import PromptStyle, style_for

if TYPE_CHECKING:
    from shared.manifest.model import PromptSettings
    from shared.tasks import Task

PROMPT_VERSION = "distill-prompts-1"


def teacher_conversations(task: Task, row: Row, settings: PromptSettings) -> list[list[Message]]:
    """The message lists sent to the teacher for one row, in order: one per answer the row needs.

    A single-turn row needs one answer. A conversation needs one per assistant turn, each asked from the row's
    own history up to that turn's user message, so the calls of a row are independent of each other.
    """
    rules = task.rules
    if not rules.single_turn:
        msgs = list(row.messages)
        return [msgs[:i] for i, m in enumerate(msgs) if m["role"] == "assistant"]
    style = style_for(settings)
    if style is PromptStyle.PLAIN:
        return [list(row.messages)]
    rest = [m for m in row.messages if m["role"] != "system"]
    return [[{"role": "system", "content": rules.teacher_system(style, settings)}, *rest]]
