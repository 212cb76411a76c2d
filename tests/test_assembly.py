"""Fine-tune records and the deterministic split."""

import pytest

from shared.assembly import held_out, training_record
from shared.manifest.model import PromptSettings, StudentSettings
from shared.rows import Row, RowIds
from shared.tasks import Task
from shared.tasks.base import Accepted

SYSTEM = {"role": "system", "content": "Answer with a number."}
USER = {"role": "user", "content": "What is 2 + 3?"}
STUDENT = StudentSettings()


def row(*messages: dict[str, str]) -> Row:
    return Row(id="ab" * 32 + "-0", source="t.jsonl", line=3, messages=tuple(messages), reference="5")


def test_single_turn_record_is_original_prompt_plus_answer_only() -> None:
    record = training_record(Task.MATH, row(SYSTEM, USER), [Accepted("5", "2 plus 3 is 5.")],
                             prompt=PromptSettings(chain_of_thought=True), student=STUDENT)
    assert record == {"messages": [SYSTEM, USER, {"role": "assistant", "content": "5"}]}


def test_keep_reasoning_trains_on_reasoning_then_answer() -> None:
    prompt = PromptSettings(chain_of_thought=True, keep_reasoning=True)
    record = training_record(Task.MATH, row(SYSTEM, USER), [Accepted("5", "2 plus 3 is 5.")],
                             prompt=prompt, student=STUDENT)
    assert record["messages"][-1] == {"role": "assistant", "content": "2 plus 3 is 5.\nAnswer: 5"}


def test_conversation_turns_are_replaced_in_order() -> None:
    turns = (SYSTEM, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "old1"},
             {"role": "user", "content": "u2"}, {"role": "assistant", "content": "old2"})
    record = training_record(Task.CONVERSATION, row(*turns), [Accepted("new1", None), Accepted("new2", None)],
                             prompt=PromptSettings(), student=STUDENT)
    assert [m["content"] for m in record["messages"]] == [SYSTEM["content"], "u1", "new1", "u2", "new2"]


def test_answer_count_must_match_the_turns() -> None:
    with pytest.raises(ValueError, match="1 answers for 2 assistant turns"):
        turns = (SYSTEM, USER, {"role": "assistant", "content": "a"}, USER, {"role": "assistant", "content": "b"})
        training_record(Task.CONVERSATION, row(*turns), [Accepted("x", None)], prompt=PromptSettings(),
                        student=STUDENT)


def test_phi3_medium_students_get_the_system_text_folded_into_the_user_turn() -> None:
    student = StudentSettings(model="azureml://registries/azureml/models/Phi-3-medium-4k-instruct/versions/3")
    record = training_record(Task.MATH, row(SYSTEM, USER), [Accepted("5", None)], prompt=PromptSettings(),
                             student=student)
    assert record["messages"] == [{"role": "user", "content": "Answer with a number. What is 2 + 3?"},
                                  {"role": "assistant", "content": "5"}]


def test_split_is_deterministic_near_the_fraction_and_keeps_copies_together() -> None:
    ids = RowIds()
    row_ids = [ids.assign([{"role": "user", "content": f"question {i}"}]) for i in range(4000)]
    held = [i for i in row_ids if held_out(i, 0.1)]
    assert 300 < len(held) < 500
    assert held == [i for i in row_ids if held_out(i, 0.1)]
    first, second = ids.assign([USER]), ids.assign([USER])
    assert first.endswith("-0") and second.endswith("-1")
    assert held_out(first, 0.5) == held_out(second, 0.5)
