"""What the reliability scenarios share: generated QA rows, a teacher that logs its requests, a job run end to end."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobState
from shared.local.runtime import LocalRuntime
from shared.ports import BlobStore
from shared.tasks import Task
from shared.testkit.teacher import FakeTeacher

QA_SYSTEM = "Answer with the letter of the right option only."
FIGURES = Path(__file__).with_name("figures.json")
COLUMNS = ("faults_injected", "rows_processed", "rows_lost", "rows_duplicated", "hostile_inputs", "crashes")
HEADINGS = ("Scenario", "Faults injected", "Rows processed", "Rows lost", "Rows duplicated", "Hostile inputs tried",
            "Crashes")
LETTERS = "ABCD"


def qa_rows(count: int, prefix: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """`count` distinct multiple-choice rows with reference answers, and the teacher's answers to them."""
    rows, answers = [], {}
    for i in range(count):
        question = (f"{prefix} question {i}: which option names the number {i % 4 + 1}?\nAnswer Choices:\n"
                    + "\n".join(f"({letter}) number {n}" for n, letter in enumerate(LETTERS, 1)))
        answer = LETTERS[i % 4]
        rows.append({"messages": [{"role": "system", "content": QA_SYSTEM}, {"role": "user", "content": question},
                                  {"role": "assistant", "content": answer}]})
        answers[question] = answer
    return rows, answers


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")


def user_of(row: Mapping[str, Any]) -> str:
    return next(m["content"] for m in row["messages"] if m["role"] == "user")


class LoggedTeacher(FakeTeacher):
    """The test teacher, keeping the time and last user message of every chat request it receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[float, str]] = []
        self.credentials: set[str | None] = set()
        self._log_lock = threading.Lock()

    def _record(self, key: str, body: dict[str, Any], headers: Mapping[str, str], path: str) -> int:
        with self._log_lock:
            self.log.append((time.monotonic(), key))
        number = super()._record(key, body, headers, path)
        self.credentials.add(self.last_credential)
        return number

    def times(self, key: str) -> list[float]:
        """When the requests for this user message arrived."""
        return [at for at, asked in self.log if asked == key]


def qa_teacher(answers: Mapping[str, str], **kwargs: Any) -> LoggedTeacher:
    return LoggedTeacher(answers, task=Task.NLU_QA, **kwargs)


def qa_manifest(teacher_url: str, **changes: Any) -> dict[str, Any]:
    """A native manifest for train.jsonl + validation.jsonl beside it, labelled by the teacher at `teacher_url`."""
    doc: dict[str, Any] = {"task": "nlu_qa", "training_file": "train.jsonl", "validation_file": "validation.jsonl",
                           "teacher": {"kind": "openai_compatible", "url": teacher_url, "model": "big"},
                           "min_rows": 5, "finetune": False}
    for key, value in changes.items():
        if isinstance(value, dict):
            doc[key] = {**doc.get(key, {}), **value}
        else:
            doc[key] = value
    return doc


def put_job(store: BlobStore, job: str, manifest: Mapping[str, Any], files: Mapping[str, bytes]) -> str:
    """Upload a job's data, then its manifest (which starts it); returns the manifest's blob path."""
    for name, data in files.items():
        store.write(f"input/{job}/{name}", data)
    store.write(f"input/{job}/manifest.json", dumps(dict(manifest)))
    return f"input/{job}/manifest.json"


def run_job(store: BlobStore, queue_db: Path, job: str, *, environ: Mapping[str, str], **runtime: Any
            ) -> dict[str, Any]:
    """Drive the registered functions (as `distill run` does) until the job is final; returns its record."""
    local = LocalRuntime(store, queue_db, environ=environ, **runtime)
    try:
        local.blob_created(f"input/{job}/manifest.json")
        local.drain(lambda: JobState(read_json(store, JobPaths("jobs", job).status)["state"]).final)
    finally:
        local.close()
    return read_json(store, JobPaths("jobs", job).status)


def output_lines(store: BlobStore, job: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name in ("train", "validation", "rejected"):
        blob = store.read(JobPaths("jobs", job).file(f"{name}.jsonl"))
        out[name] = [json.loads(line) for line in blob.data.splitlines()] if blob else []
    return out


def tally(store: BlobStore, job: str, inputs: Mapping[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Rows processed, lost (in no output) and duplicated (in outputs more than once), by each input row's question.

    `inputs` maps a data file's name to its rows; a rejected row is traced back by its file and line.
    """
    by_line = {(name, line): user_of(row) for name, rows in inputs.items() for line, row in enumerate(rows, 1)}
    out = output_lines(store, job)
    seen: Counter[str] = Counter(user_of(r) for r in out["train"] + out["validation"])
    seen.update(by_line[(r["source"], r["line"])] for r in out["rejected"])
    questions = set(by_line.values())
    return {"rows_processed": sum(seen.values()),
            "rows_lost": len(questions - set(seen)),
            "rows_duplicated": sum(n - 1 for n in seen.values() if n > 1) + len(set(seen) - questions)}


def figures_table(figures: Mapping[str, Mapping[str, int]]) -> str:
    """The README's reliability table: one line per scenario, then the totals."""
    lines = ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
    for scenario, row in sorted(figures.items()):
        lines.append(f"| {scenario} | " + " | ".join(f"{row[c]:,}" for c in COLUMNS) + " |")
    totals = [sum(row[c] for row in figures.values()) for c in COLUMNS]
    lines.append("| **total** | " + " | ".join(f"**{n:,}**" for n in totals) + " |")
    return "\n".join(lines)
