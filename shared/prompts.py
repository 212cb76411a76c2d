"""Teacher prompts: what the teacher is asked for each row.

Without chain of thought or density the teacher sees the row's own messages. With them, the row's system prompt is
replaced, for the teacher call only, by one of ours. `PROMPT_VERSION` changes whenever any text here changes: it is
part of the job id and of cache keys, so a new wording never reuses replies to an old one.
"""

from __future__ import annotations

from enum import StrEnum

from shared.manifest import PromptSettings
from shared.rows import Message, Row
from shared.tasks import Task

PROMPT_VERSION = "distill-prompts-1"


class PromptStyle(StrEnum):
    PLAIN = "plain"
    CHAIN_OF_THOUGHT = "chain_of_thought"
    CHAIN_OF_DENSITY = "chain_of_density"


def style_for(settings: PromptSettings) -> PromptStyle:
    if settings.chain_of_density:
        return PromptStyle.CHAIN_OF_DENSITY
    if settings.chain_of_thought:
        return PromptStyle.CHAIN_OF_THOUGHT
    return PromptStyle.PLAIN


_ANSWER_SPEC = {
    Task.NLI: 'exactly one of the labels "entailment", "contradiction" or "neutral"',
    Task.NLU_QA: "the single capital letter of the correct option, for example \"B\"",
    Task.MATH: "a plain number with no units, words or symbols, for example 42 or -3.5",
}

_PROBLEMS = {
    Task.NLI: "natural language inference problems (how a hypothesis relates to a premise)",
    Task.NLU_QA: "multiple-choice questions",
    Task.MATH: "math word problems",
}

COT_MARKER = "Think it through in a few short steps"
COD_MARKER = "increasingly entity-dense summaries"


def chain_of_thought_system(task: Task) -> str:
    return (
        f"You solve {_PROBLEMS[task]} carefully. {COT_MARKER} "
        "(80 words at most), then give your final answer. "
        "Reply with one JSON object and nothing else, in this form:\n"
        '{"reasoning": "<your short reasoning>", "answer": <final answer>}\n'
        f"The answer must be {_ANSWER_SPEC[task]}."
    )


def chain_of_density_system(max_words: int) -> str:
    return (
        f"You write {COD_MARKER} of an article. Write four summaries of the same article, one after the other. "
        "Each new summary keeps every entity of the one before, adds one to three informative entities that "
        "were missing, and stays as short by fusing and compressing the wording. "
        f"Every summary has at most {max_words} words. "
        "Reply with one JSON list of four objects and nothing else, in this form:\n"
        '[{"missing_entities": "<entities added in this step>", "denser_summary": "<the summary>"}, ...]'
    )


def teacher_conversations(task: Task, row: Row, settings: PromptSettings) -> list[list[Message]]:
    """The message lists sent to the teacher for one row, in order: one per answer the row needs.

    A single-turn row needs one answer. A conversation needs one per assistant turn, each asked from the row's
    own history up to that turn's user message, so the calls of a row are independent of each other.
    """
    if task is Task.CONVERSATION:
        msgs = list(row.messages)
        return [msgs[:i] for i, m in enumerate(msgs) if m["role"] == "assistant"]
    style = style_for(settings)
    if style is PromptStyle.PLAIN:
        return [list(row.messages)]
    system = (chain_of_thought_system(task) if style is PromptStyle.CHAIN_OF_THOUGHT
              else chain_of_density_system(settings.max_len_summary))
    rest = [m for m in row.messages if m["role"] != "system"]
    return [[{"role": "system", "content": system}, *rest]]


def detect_style(messages: list[Message]) -> PromptStyle:
    """Which of our prompts a teacher request carries (used by the test teacher to answer in kind)."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    if COD_MARKER in system:
        return PromptStyle.CHAIN_OF_DENSITY
    if COT_MARKER in system:
        return PromptStyle.CHAIN_OF_THOUGHT
    return PromptStyle.PLAIN
