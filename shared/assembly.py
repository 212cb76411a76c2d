"""From accepted teacher answers to fine-tune records, and the deterministic train/validation split."""

from __future__ import annotations

from collections.abc import Sequence

from shared.manifest.model import PromptSettings, StudentSettings
from shared.rows import Message, Row
from shared.tasks import Task
from shared.tasks.base import Accepted


def student_answer(answer: Accepted, prompt: PromptSettings) -> str:
    """The assistant text the student learns: the answer alone, or reasoning then answer (distilling step by step)."""
    if prompt.keep_reasoning and answer.reasoning:
        return f"{answer.reasoning.strip()}\nAnswer: {answer.answer}"
    return answer.answer


def training_record(task: Task, row: Row, answers: Sequence[Accepted], *, prompt: PromptSettings,
                    student: StudentSettings) -> dict[str, list[Message]]:
    """One fine-tune record: the row's original system and user (and history) messages plus the teacher's answers.

    A single-turn row takes one answer. A conversation takes one per assistant turn, in order, each replacing the
    original turn.
    """
    single = task.rules.single_turn
    turns = 1 if single else sum(m["role"] == "assistant" for m in row.messages)
    if len(answers) != turns:
        raise ValueError(f"row {row.id}: {len(answers)} answers for {turns} assistant turns")
    texts = iter(student_answer(a, prompt) for a in answers)
    if single:
        messages = [*row.messages, {"role": "assistant", "content": next(texts)}]
    else:
        messages = [{"role": m["role"], "content": next(texts) if m["role"] == "assistant" else m["content"]}
                    for m in row.messages]
    if not student.takes_system_prompt:
        messages = fold_system_prompt(messages)
    return {"messages": messages}


def fold_system_prompt(messages: list[Message]) -> list[Message]:
    """For students without a system role (Phi-3-medium): `[user: system + " " + user, ...]`."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, first_user, *rest = messages
    return [{"role": "user", "content": f"{system['content']} {first_user['content']}"}, *rest]


def held_out(row_id: str, fraction: float) -> bool:
    """Whether a row goes to validation when no validation file is given.

    Decided by the row id's leading hash digits alone, so the split is the same on every run and every machine,
    and identical rows (same hash) always land on the same side.
    """
    return int(row_id[:8], 16) < fraction * 16**8
