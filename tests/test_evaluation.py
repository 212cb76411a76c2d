"""Scoring (ROUGE-L, exact answers) and the evaluation items read from a job run through the real pipeline."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.evaluation import evaluation_items, score
from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.local.runtime import LocalRuntime
from shared.local.samples import write_nli_sample
from shared.manifest.model import Manifest, PromptSettings
from shared.rouge import rouge_l
from shared.storage.local import LocalBlobStore
from shared.tasks import Task
from shared.testkit.teacher import FakeTeacher, Fault

PLAIN = PromptSettings()
QA = "Where do you borrow books?\n(A) bank\n(B) library\n(C) garden"


def test_rouge_l_known_values() -> None:
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("a b c d", "a c") == pytest.approx(2 / 3)  # precision 1/2, recall 1
    assert rouge_l("The CAT, sat.", "the cat sat") == 1.0
    assert rouge_l("dogs bark", "cats purr") == 0.0


@pytest.mark.parametrize(("candidate", "reference"), [("", "a b"), ("a b", ""), ("", ""), ("...", "a")])
def test_rouge_l_is_zero_for_empty_text(candidate: str, reference: str) -> None:
    assert rouge_l(candidate, reference) == 0.0


@pytest.mark.parametrize(("task", "answer", "target", "expected"), [
    (Task.NLI, "entailment", "entailment", 1.0),
    (Task.NLI, "**Entailment**", "entailment", 1.0),
    (Task.NLI, "The premise says so.\nAnswer: contradiction", "contradiction", 1.0),  # keep_reasoning students
    (Task.NLI, "neutral", "entailment", 0.0),
    (Task.NLI, "I cannot tell from the text given here at all", "neutral", 0.0),
    (Task.NLI, None, "neutral", 0.0),
    (Task.MATH, "27.0", "27", 1.0),
    (Task.MATH, "27", "27.0", 1.0),
    (Task.MATH, "The answer is $1,000.", "1000", 1.0),
    (Task.MATH, "3/4", "0.75", 1.0),
    (Task.MATH, "28", "27", 0.0),
    (Task.MATH, "twenty-seven", "27", 0.0),
    (Task.NLU_QA, "(B)", "B", 1.0),
    (Task.NLU_QA, "B) library", "(B)", 1.0),
    (Task.NLU_QA, "library", "B", 1.0),
    (Task.NLU_QA, "C", "B", 0.0),
    (Task.NLU_QA, "D", "D", 0.0),  # not an option of the question
])
def test_label_tasks_score_the_parsed_answer(task: Task, answer: str | None, target: str, expected: float) -> None:
    assert score(task, answer, target, question=QA, prompt=PLAIN) == expected


def test_a_target_that_does_not_parse_is_compared_as_written() -> None:
    assert score(Task.NLI, "neutral", "unsure", question="q", prompt=PLAIN) == 0.0


@pytest.mark.parametrize("task", [Task.SUMMARIZATION, Task.CONVERSATION])
def test_summaries_and_chat_score_rouge_l(task: Task) -> None:
    assert score(task, "the cat sat on the mat", "the cat is on the mat", question="q",
                 prompt=PLAIN) == pytest.approx(5 / 6)
    assert score(task, None, "the cat", question="q", prompt=PLAIN) == 0.0


# --- evaluation items of a job run through the pipeline with the test teacher --------------------------------
@dataclass
class Job:
    store: LocalBlobStore
    paths: JobPaths
    manifest: Manifest


def read_messages(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").splitlines()]


def write_rows(path: Path, rows: list[list[dict]]) -> None:
    path.write_text("".join(json.dumps({"messages": messages}) + "\n" for messages in rows), encoding="utf-8")


def nli_sample(folder: Path, validation_rows: int = 12) -> dict[str, list[list[dict]]]:
    """The generated NLI sample's rows by file (70 training rows), each ending with its reference answer."""
    write_nli_sample(folder, rows=70, validation_rows=validation_rows)
    return {name: read_messages(folder / name) for name in ("train.jsonl", "validation.jsonl")}


def run_job(tmp_path: Path, files: dict[str, list[list[dict]]], answers: dict[str, str], *, task: Task = Task.NLI,
            refuse: str | None = None) -> Job:
    """Label `files` with the test teacher (giving `answers`) through the local runtime, `finetune: false`.

    `refuse`: the teacher refuses every question containing this text, so the row is rejected.
    """
    store = LocalBlobStore(tmp_path / "storage")
    for name, rows in files.items():
        write_rows(tmp_path / name, rows)
        store.upload_from(f"input/job1/{name}", tmp_path / name)
    manifest = {"task": task.value, "training_file": "train.jsonl", "validation_file": "validation.jsonl",
                "min_rows": 1, "teacher": {"kind": "local", "model": "distill-test-teacher"}, "finetune": False}
    store.write("input/job1/manifest.json", dumps(manifest))
    paths = JobPaths("jobs", "job1")
    with FakeTeacher(answers, task=task) as teacher:
        if refuse:
            teacher.inject(Fault.REFUSE, match=refuse, times=10)
        runtime = LocalRuntime(store, tmp_path / "queue.db", environ={}, local_teacher_url=teacher.base_url)
        try:
            runtime.blob_created("input/job1/manifest.json")
            runtime.drain(lambda: read_json(store, paths.status)["state"] in ("failed", "dataset ready"))
        finally:
            runtime.close()
    record = read_json(store, paths.status)
    assert record["state"] == "dataset ready", record.get("errors")
    return Job(store, paths, Manifest.model_validate(read_json(store, paths.manifest)))


def answers_of(files: dict[str, list[list[dict]]]) -> dict[str, str]:
    """What the test teacher answers: each row's reference answer."""
    return {messages[1]["content"]: messages[2]["content"] for rows in files.values() for messages in rows}


def hypothesis(messages: list[dict]) -> str:
    return messages[1]["content"].rsplit("Hypothesis: ", 1)[1]


def test_reference_mode_keeps_every_validation_row_with_its_reference(tmp_path: Path) -> None:
    files = nli_sample(tmp_path / "sample")
    rows = files["validation.jsonl"]
    job = run_job(tmp_path, files, answers_of(files), refuse=hypothesis(rows[4]))
    items, mode = evaluation_items(job.store, job.paths, job.manifest)
    assert mode == "reference"
    assert [item.target for item in items] == [messages[2]["content"] for messages in rows]
    assert [item.messages for item in items] == [tuple(messages[:2]) for messages in rows]
    assert items[4].teacher_answer is None
    assert all(item.teacher_answer == item.target for i, item in enumerate(items) if i != 4)
    assert items[0].question == rows[0][1]["content"]
    assert read_json(job.store, job.paths.status)["rejected"] == 1


def test_teacher_mode_targets_the_teacher_answers_and_skips_its_failures(tmp_path: Path) -> None:
    files = nli_sample(tmp_path / "sample")
    answers, rows = answers_of(files), files["validation.jsonl"]
    files["validation.jsonl"] = [messages[:2] for messages in rows]  # no reference answers
    job = run_job(tmp_path, files, answers, refuse=hypothesis(rows[0]))
    items, mode = evaluation_items(job.store, job.paths, job.manifest)
    assert mode == "teacher"
    assert len(items) == len(rows) - 1
    assert [item.target for item in items] == [messages[2]["content"] for messages in rows[1:]]
    assert all(item.teacher_answer == item.target for item in items)


def conversation(n: int) -> list[dict]:
    return [{"role": "system", "content": "You are kind."}, {"role": "user", "content": f"Hello {n}"},
            {"role": "assistant", "content": "Hi!"}, {"role": "user", "content": f"How are you, {n}?"},
            {"role": "assistant", "content": "Fine."}]


def test_a_conversation_is_asked_its_last_turn_and_targets_the_teacher(tmp_path: Path) -> None:
    files = {"train.jsonl": [conversation(n) for n in range(5)], "validation.jsonl": [conversation(n) for n in (7, 8)]}
    job = run_job(tmp_path, files, {}, task=Task.CONVERSATION)
    items, mode = evaluation_items(job.store, job.paths, job.manifest)
    assert mode == "teacher"
    assert [item.messages for item in items] == [tuple(conversation(n)[:4]) for n in (7, 8)]
    assert items[0].question == "How are you, 7?"
    assert items[0].target == items[0].teacher_answer == (
        'Thanks for your message about "How are you, 7?". Here is a short reply.')


def test_a_job_that_was_never_planned_has_no_items(tmp_path: Path) -> None:
    manifest = Manifest(task=Task.NLI, training_file=tmp_path / "train.jsonl")
    with pytest.raises(LookupError, match=r"plan\.json"):
        evaluation_items(LocalBlobStore(tmp_path), JobPaths("jobs", "nope"), manifest)
