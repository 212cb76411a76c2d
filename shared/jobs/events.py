"""Distill's own events: what each change of a job record publishes, as CloudEvents 1.0.

A change of the job record (shared.jobs.record) that is a transition users care about adds an entry to the record's
outbox in the same compare-and-swap, so a state change and its event are never one without the other; the pipeline
publishes the outbox and empties it (shared.pipeline.events). An event's id follows from the job, its attempt (the
record's creation time and budget round) and the transition, so a handler run again republishes the same id, which
subscribers can drop, while `--restart` or a budget resume makes new ones.

Types: Distill.Job.Accepted (validated and fanned out), Distill.Job.Progress (one for each tenth or more of the rows),
Distill.Job.DatasetReady (assembled and past the gates), Distill.Job.FineTuneStarted, and the ends
Distill.Job.Succeeded, Distill.Job.Failed, Distill.Job.Cancelled, Distill.Job.BudgetSpent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.jobs.paths import OUTPUTS, JobPaths

if TYPE_CHECKING:
    from shared.jobs.record import JobRecord

PREFIX = "Distill.Job."
ENDS = {"succeeded": "Succeeded", "failed": "Failed", "cancelled": "Cancelled", "budget spent": "BudgetSpent"}
PROGRESS_STEP = 10  # percent of the rows between two Progress events, at least
TYPES = tuple(PREFIX + name for name in ("Accepted", "Progress", "DatasetReady", "FineTuneStarted", *ENDS.values()))


def transitions(before: JobRecord, after: JobRecord) -> list[str]:
    """The events a change from `before` to `after` publishes, as "<Type>" or "Progress-<tenths>"."""
    found = []
    if before.state == "ingesting" and after.state == "labeling":
        found.append("Accepted")
    if after.state in ("labeling", "assembling") and (percent := percent_done(after)) >= \
            (after.progress_reported or 0) + PROGRESS_STEP:
        found.append(f"Progress-{percent}")
    if before.state == "assembling" and after.state in ("fine-tuning", "dataset ready"):
        found.append("DatasetReady")
    if after.finetune and after.finetune.started and not (before.finetune and before.finetune.started):
        found.append("FineTuneStarted")
    if after.state != before.state and (end := ENDS.get(after.state)):
        found.append(end)
    return found


def outbox_entry(record: JobRecord, transition: str, container: str) -> dict[str, Any]:
    """The event for one transition, as the outbox keeps it (a CloudEvent without its source)."""
    kind = transition.partition("-")[0]
    return {"id": f"{record.job}/{record.attempt}-r{record.round or 0}/{transition}", "type": PREFIX + kind,
            "subject": f"jobs/{record.job}",
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": summary(record, container, progress=kind == "Progress")}


def summary(record: JobRecord, container: str, *, progress: bool = False) -> dict[str, Any]:
    """What an event says of its job: state, counts, tokens, success ratio, fine-tune run, scores, file locations
    (and with `progress`, how many of its shards are done)."""
    data: dict[str, Any] = {"job": record.job, "state": str(record.state)}
    if progress and record.shards:
        done = len(record.shards_done or [])
        data["progress"] = {"percent": percent_done(record), "shards_done": done, "shards": record.shards}
    for name in ("task", "rows", "accepted", "rejected", "rejected_by_reason", "success_ratio", "tokens", "metrics",
                 "budget", "reason", "errors"):
        if value := getattr(record, name):
            data[name] = value
    if ft := record.finetune:
        data["finetune"] = {"name": ft.name, "status": ft.status, "output_model": ft.output_model}
    if record.evaluation and ("scores" in record.evaluation or "error" in record.evaluation):
        data["evaluation"] = {key: value for key, value in record.evaluation.items()
                              if key not in ("claim", "claimed")}
    if record.accepted is not None:
        paths = JobPaths(container, record.job)
        data["files"] = {name.removesuffix(".jsonl"): paths.file(name) for name in OUTPUTS}
    return data


def cloud_event(entry: dict[str, Any], source: str) -> dict[str, Any]:
    """An outbox entry as a CloudEvents 1.0 event in JSON (structured mode)."""
    return {"specversion": "1.0", "id": entry["id"], "source": source, "type": entry["type"],
            "subject": entry["subject"], "time": entry["time"], "datacontenttype": "application/json",
            "data": entry["data"]}


def percent_done(record: JobRecord) -> int:
    """Percent of the job's rows labelled, from the rows of the shards done (from the shards, for a record that does
    not say how many rows a shard holds)."""
    done, shards, rows = record.shards_done or [], record.shards or 0, record.rows or {}
    total, per_shard = rows.get("total", 0), rows.get("per_shard")
    if not per_shard or not total:
        return 100 * len(done) // shards if shards else 0
    return 100 * sum(min(per_shard, total - index * per_shard) for index in done) // total
