"""Jobs written into a blob store as the pipeline writes them, for the dashboard's tests: a finished job with rejected
rows, fine-tune losses and an evaluation chart, and a job still labelling."""

from __future__ import annotations

import json

from shared.jobs.blobs import dumps
from shared.jobs.paths import METRICS, JobPaths
from shared.jobs.record import FineTune, JobRecord, JobState
from shared.ports import BlobStore
from shared.report import chart, loss_curves

CONTAINER = "jobs"
T0 = 1_796_000_000.0  # a fixed time, so pages (and their screenshots) come out the same on every run
HOSTILE = '<script>window.pwned = true</script><img src=x onerror="window.pwned = true">'
REJECTED = [
    {"id": "row-1", "split": "train", "source": "train.jsonl", "line": 3, "reason": "invalid_label",
     "detail": "'maybe' is not one of entailment, contradiction, neutral", "excerpt": f"The answer is {HOSTILE}"},
    {"id": "row-2", "split": "validation", "source": "validation.jsonl", "line": 7, "reason": "no_answer",
     "detail": "no label in the reply", "excerpt": "I cannot tell </td></tr></table><h1>big</h1>"},
]
METRICS_DOC = {"train": [{"step": step, "loss": 2.5 / step} for step in range(1, 31)],
               "eval": [{"step": 10 * n, "loss": 0.9 / n} for n in range(1, 4)]}


def finished_job(store: BlobStore, job: str = "nli-finished", *, rejected: list[dict] | None = None,
                 container: str = CONTAINER) -> JobPaths:
    paths = JobPaths(container, job)
    rows = REJECTED if rejected is None else rejected
    reasons: dict[str, int] = {}
    for row in rows:
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    record = JobRecord(
        job=job, state=JobState.SUCCEEDED, created=T0, updated=T0 + 1500, task="NLI", shards=2,
        rows={"total": 8 + len(rows), "train": 6, "validation": 2 + len(rows), "per_shard": 5}, shards_done=[0, 1],
        accepted={"train": 6, "validation": 2}, rejected=len(rows), rejected_by_reason=reasons,
        success_ratio=8 / (8 + len(rows)), tokens={"prompt": 12_400, "completion": 310},
        timings={"labeling_started": T0 + 1, "finished": T0 + 1500}, trace_id="0af7651916cd43dd8448eb211c80319c",
        finetune=FineTune(name=f"{job}-ft", status="Completed", output_model=f"{job}-student", started=T0 + 60,
                          finished=T0 + 1200),
        evaluation={"scores": {"teacher": 0.9, "base": 0.25, "distilled": 0.85}, "rows": 2, "metric": "accuracy",
                    "mode": "reference", "report": paths.file("report.md")},
        errors=[f"a note with markup {HOSTILE}"])
    store.write(paths.status, dumps(record.to_json()))
    for name in ("train.jsonl", "validation.jsonl"):
        store.write(paths.file(name), b'{"messages": []}\n')
    store.write(paths.file("rejected.jsonl"), "".join(json.dumps(row) + "\n" for row in rows).encode())
    store.write(paths.file(METRICS), json.dumps(METRICS_DOC).encode())
    report = {"scores": record.evaluation["scores"], "metric": "accuracy", "task": "NLI", "n": 2, "mode": "reference"}
    store.write(paths.file("report.png"), chart(report, loss_curves(METRICS_DOC)))
    store.write(paths.file("report.md"), b"# Evaluation\n")
    return paths


def running_job(store: BlobStore, job: str = "math-running", done: tuple[int, ...] = (0,), *,
                container: str = CONTAINER) -> JobPaths:
    """A job labelling 4 shards of 25 rows (the last of 10), `done` of them finished."""
    paths = JobPaths(container, job)
    record = JobRecord(job=job, state=JobState.LABELING, created=T0 + 2000, updated=T0 + 2010, task="MATH", shards=4,
                       rows={"total": 85, "train": 70, "validation": 15, "per_shard": 25}, shards_done=list(done),
                       pace={"per_minute": 600.0, "source": "headers"})
    store.write(paths.status, dumps(record.to_json()))
    return paths
