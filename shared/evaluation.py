"""Scoring answers against targets, the validation rows of a job as evaluation items, and the evaluation's summary and
per-row results (pure Python).

A job's validation rows are scored against their reference answers when every one carries a reference
("reference" mode); otherwise against the teacher's own answers ("teacher" mode), which only measures how
closely a student imitates its teacher.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

from shared.assembly import fold_system_prompt
from shared.jobs.blobs import now, read_json
from shared.jobs.paths import JobPaths
from shared.jobs.shards import labelled_shards
from shared.manifest.model import Manifest, PromptSettings
from shared.parsing import parse_reply
from shared.ports import BlobStore
from shared.prompts import teacher_conversations
from shared.rouge import rouge_l
from shared.rows import Message, Row
from shared.tasks import Task
from shared.tasks.base import Accepted
from shared.tasks.reading import excerpt

Mode = Literal["reference", "teacher"]
ROLES = ("teacher", "base", "distilled")  # the models an evaluation scores, in the order they are shown
EXAMPLES = 3  # rows of each model the report shows
_PLAIN = PromptSettings()


def score(task: Task, answer_text: str | None, target: str, *, question: str, prompt: PromptSettings) -> float:
    """1.0 or 0.0 for a label, letter or number (both sides parsed alike); ROUGE-L for summaries and chat.

    Replies are parsed in plain style whatever the job's `prompt` asked of the teacher: students get the row's
    original system prompt, and one trained with `keep_reasoning` ends its reply with "Answer: X", which plain
    parsing reads. A target that does not parse is compared as written.
    """
    if task.rules.metric == "rouge_l":
        return rouge_l(answer_text or "", target)
    answer = parse_reply(task, answer_text, "stop", question=question, prompt=_PLAIN)
    expected = parse_reply(task, target, "stop", question=question, prompt=_PLAIN)
    wanted = expected.answer if isinstance(expected, Accepted) else target.strip()
    return float(isinstance(answer, Accepted) and answer.answer == wanted)


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One validation question: the messages a student is asked, what it should answer, what the teacher did."""

    id: str
    messages: tuple[Message, ...]  # the row's input up to the last user message, with its original system prompt
    target: str
    teacher_answer: str | None  # None when the teacher's reply was rejected

    @property
    def question(self) -> str:
        """The last user message (NLU_QA reads its options there)."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


@dataclass(frozen=True, slots=True)
class _Labelled:
    row: Row
    messages: tuple[Message, ...]
    teacher_answer: str | None


def evaluation_items(store: BlobStore, paths: JobPaths, manifest: Manifest, limit: int | None = None
                     ) -> tuple[list[EvalItem], Mode]:
    """The job's validation rows (the first `limit` of them) as evaluation items, in input order, and the mode
    their targets come from.

    "reference" when every validation row carries a reference answer: rows the teacher failed stay in (the
    teacher scores 0 on them). Otherwise "teacher": the target is the teacher's (last) answer and rows the
    teacher failed are left out. The rows are streamed twice (the mode, then the items), never held all at once.
    """
    seen = False
    for item in _validation_rows(store, paths, manifest):
        seen = True
        if item.row.reference is None:
            mode: Mode = "teacher"
            break
    else:
        mode = "reference" if seen else "teacher"
    labelled = _validation_rows(store, paths, manifest)
    if mode == "reference":
        items = (EvalItem(i.row.id, i.messages, i.row.reference, i.teacher_answer) for i in labelled)
    else:
        items = (EvalItem(i.row.id, i.messages, i.teacher_answer, i.teacher_answer)
                 for i in labelled if i.teacher_answer is not None)
    return list(islice(items, limit)), mode


def _validation_rows(store: BlobStore, paths: JobPaths, manifest: Manifest) -> Iterator[_Labelled]:
    """Each validation row joined with its shard result, streamed shard by shard."""
    plan = read_json(store, paths.plan)
    if plan is None:
        raise LookupError(f"{paths.plan} does not exist: the job has not been planned yet")
    for shard in labelled_shards(store, paths, plan["shards"]):
        for row, result in shard.rows:
            if result.split == "validation":
                answer = result.answers[-1].answer if result.answers else None
                yield _Labelled(row, _student_messages(manifest, row), answer)


def _student_messages(manifest: Manifest, row: Row) -> tuple[Message, ...]:
    """What the student is asked: the row's own messages up to its last question, as it was trained on them."""
    messages = teacher_conversations(manifest.task, row, _PLAIN)[-1]
    return tuple(messages if manifest.student.takes_system_prompt else fold_system_prompt(messages))


def points(manifest: Manifest, items: Sequence[EvalItem], replies: Sequence[str | None]) -> list[float]:
    """Each reply's score against its item's target."""
    return [score(manifest.task, reply, item.target, question=item.question, prompt=manifest.prompt)
            for item, reply in zip(items, replies, strict=True)]


def agreement(manifest: Manifest, items: Sequence[EvalItem], replies: Sequence[str | None]) -> float | None:
    """How often a student gives the teacher's answer (the mean score against the teacher's answers, on the rows the
    teacher answered); None when it answered none."""
    pairs = [(item, reply) for item, reply in zip(items, replies, strict=True) if item.teacher_answer is not None]
    if not pairs:
        return None
    return _mean([score(manifest.task, reply, item.teacher_answer or "", question=item.question,
                        prompt=manifest.prompt) for item, reply in pairs])


def row_results(items: Sequence[EvalItem], answers: dict[str, list[str | None]],
                scores: dict[str, list[float]]) -> Iterator[dict[str, Any]]:
    """`evaluation.jsonl`: one line per row and model (row id, model, answer, target, score), row by row."""
    for index, item in enumerate(items):
        for role in ROLES:
            if role in answers:
                yield {"id": item.id, "model": role, "answer": answers[role][index], "target": item.target,
                       "score": round(scores[role][index], 4)}


def build_report(job: str, manifest: Manifest, mode: Mode, items: Sequence[EvalItem],
                 answers: dict[str, list[str | None]], scores: dict[str, list[float]],
                 models: dict[str, str]) -> dict[str, Any]:
    """The summary: each model's score as a share from 0 to 1 (models not asked are left out), the distilled
    student's agreement with the teacher, and the first rows of each model as examples."""
    report: dict[str, Any] = {
        "job": job, "task": manifest.task.value, "mode": mode, "metric": manifest.task.rules.metric, "n": len(items),
        "models": {role: models.get(role) for role in ROLES if role in answers},
        "scores": {role: round(_mean(scores[role]), 4) for role in ROLES if role in answers and items},
        "examples": {role: [{"id": item.id, "question": excerpt(item.question), "target": item.target,
                             "answer": reply, "score": round(point, 4)}
                            for item, reply, point in zip(items[:EXAMPLES], answers[role], scores[role],
                                                          strict=False)]
                     for role in ROLES if role in answers},
        "created": now()}
    if "distilled" in answers and (agreed := agreement(manifest, items, answers["distilled"])) is not None:
        report["agreement"] = round(agreed, 4)
    return report


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
