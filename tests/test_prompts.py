"""Teacher prompts: what each row sends to the teacher."""

import pytest
from prompt_texts import cod_system, cot_system

from shared.manifest.model import PromptSettings
from shared.prompts import teacher_conversations
from shared.rows import Row
from shared.tasks import Task
from shared.tasks.base import PromptStyle
from shared.testkit.teacher import detect_style

SYSTEM = {"role": "system", "content": "Only answer with the label."}
USER = {"role": "user", "content": "Premise: A. Hypothesis: B."}


def row(*messages: dict[str, str], reference: str | None = None) -> Row:
    return Row(id="0" * 64 + "-0", source="t.jsonl", line=1, messages=tuple(messages), reference=reference)


def test_plain_rows_go_to_the_teacher_as_they_are() -> None:
    [sent] = teacher_conversations(Task.NLI, row(SYSTEM, USER, reference="neutral"), PromptSettings())
    assert sent == [SYSTEM, USER]


@pytest.mark.parametrize("task,expected", [(Task.NLI, "entailment"), (Task.NLU_QA, "capital letter"),
                                           (Task.MATH, "plain number")])
def test_chain_of_thought_replaces_the_system_prompt_for_the_teacher(task: Task, expected: str) -> None:
    [sent] = teacher_conversations(task, row(SYSTEM, USER), PromptSettings(chain_of_thought=True))
    assert sent[0] == {"role": "system", "content": cot_system(task)}
    assert sent[1:] == [USER]
    assert expected in sent[0]["content"] and '"answer"' in sent[0]["content"]
    assert detect_style(sent) is PromptStyle.CHAIN_OF_THOUGHT


def test_chain_of_density_asks_for_four_summaries_within_the_word_limit() -> None:
    settings = PromptSettings(chain_of_density=True, max_len_summary=60)
    [sent] = teacher_conversations(Task.SUMMARIZATION, row(SYSTEM, USER), settings)
    assert sent[0]["content"] == cod_system(60)
    assert "at most 60 words" in sent[0]["content"] and "four" in sent[0]["content"]
    assert detect_style(sent) is PromptStyle.CHAIN_OF_DENSITY


def test_a_conversation_asks_once_per_assistant_turn_from_its_own_history() -> None:
    turns = [SYSTEM, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
             {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]
    sent = teacher_conversations(Task.CONVERSATION, row(*turns), PromptSettings())
    assert sent == [turns[:2], turns[:4]]
    assert all(conversation[-1]["role"] == "user" for conversation in sent)


def test_plain_requests_are_detected_as_plain() -> None:
    assert detect_style([SYSTEM, USER]) is PromptStyle.PLAIN
    assert detect_style([USER]) is PromptStyle.PLAIN
