"""The task registry: every task type has its rules in a module of its own, and an unknown task is an error."""

import pytest

from shared.manifest.model import PromptSettings
from shared.tasks import Task
from shared.tasks.base import AnswerRules, TaskRules


@pytest.mark.parametrize("task", list(Task))
def test_every_task_has_its_own_rules(task: Task) -> None:
    rules = task.rules
    assert isinstance(rules, TaskRules) and rules.name == task.value
    assert type(rules).__module__ == f"shared.tasks.{task.value.lower()}"
    assert rules.test_answer("Question: what is two and two?") and rules.wrong_answer("x", "question")


def test_the_rules_are_one_instance_per_task() -> None:
    assert len({id(task.rules) for task in Task}) == len(Task)


@pytest.mark.parametrize("value", ["poetry", "", "NLI2"])
def test_an_unknown_task_is_an_error(value: str) -> None:
    with pytest.raises(ValueError, match="unknown task"):
        Task.parse(value)


def test_task_names_parse_in_any_casing() -> None:
    assert Task.parse("nlu-qa") is Task.NLU_QA and Task.parse(" Math ") is Task.MATH


def test_what_each_task_allows() -> None:
    assert [t for t in Task if t.rules.chain_of_thought] == [Task.NLI, Task.NLU_QA, Task.MATH]
    assert [t for t in Task if t.rules.chain_of_density] == [Task.SUMMARIZATION]
    assert [t for t in Task if not t.rules.single_turn] == [Task.CONVERSATION]
    assert {t: t.rules.min_rows for t in Task if t.rules.min_rows != 65} == {Task.MATH: 40}
    assert {t: t.rules.metric for t in Task} == {Task.NLI: "accuracy", Task.NLU_QA: "accuracy", Task.MATH: "accuracy",
                                                 Task.CONVERSATION: "rouge_l", Task.SUMMARIZATION: "rouge_l"}
    assert all(isinstance(t.rules, AnswerRules) == t.rules.chain_of_thought for t in Task)


@pytest.mark.parametrize(("task", "prompt", "tokens"), [
    (Task.NLI, {}, 32), (Task.MATH, {"chain_of_thought": True, "keep_reasoning": True}, 352),
    (Task.SUMMARIZATION, {"max_len_summary": 100}, 216), (Task.CONVERSATION, {}, 256)])
def test_students_get_room_for_the_answer_they_were_trained_to_give(task: Task, prompt: dict, tokens: int) -> None:
    assert task.rules.answer_tokens(PromptSettings(**prompt), 320) == tokens
