"""Where a job stands, in one line: its state and how far it is, its evaluation, and a wait for the teacher (shown by
the command line and the dashboard alike)."""

from __future__ import annotations

import time

from shared.evaluation import ROLES
from shared.jobs.record import JobRecord, JobState


def progress_line(record: JobRecord | None) -> str:
    """A job's state and how far it is, in one line."""
    if record is None:
        return "submitted, waiting for ingest"
    cancelling = " (cancelling)" if record.cancel and not record.final else ""
    if record.state is JobState.LABELING:
        rows = (record.rows or {}).get("total", 0)
        done = len(record.shards_done or [])
        wait = f", {note}" if (note := waiting(record)) else ""
        pace = f", teacher paced at {p['per_minute']:,.0f} calls/min ({p['source']})" if (p := record.pace) else ""
        return f"labeling: {done} of {record.shards or 0} shards done ({rows} rows){pace}{wait}{cancelling}"
    if record.state is JobState.FINE_TUNING and record.finetune:
        started = "started" if record.finetune.started else "starting"
        return f"fine-tuning: run {record.finetune.name} {started}"
    if record.state is JobState.EVALUATING:
        return evaluation_line(record)
    return f"{record.state}{cancelling}"


def evaluation_line(record: JobRecord) -> str:
    """Where the evaluation stands, or how it ended ("" before it starts)."""
    evaluation = record.evaluation
    if not evaluation:
        return ""
    if error := evaluation.get("error"):
        model = record.finetune.output_model if record.finetune else None
        return f"evaluation failed: {error} (the fine-tuned model {model} is kept)"
    if scores := evaluation.get("scores"):
        shown = ", ".join(f"{role} {scores[role]:.3f}" for role in ROLES if role in scores)
        return f"evaluation on {evaluation.get('rows', 0)} validation rows ({evaluation.get('metric')}): {shown}"
    deployments = ", ".join(f"{role} {name}" for role, name in (evaluation.get("deployments") or {}).items())
    return "evaluating: " + (f"deploying {deployments}" if deployments and not evaluation.get("claim")
                             else "asking the students the validation rows")


def waiting(record: JobRecord) -> str:
    """The wait for the teacher now in progress ("waiting 40s for the teacher's rate limit"), or ""."""
    wait = record.waiting if record.state is JobState.LABELING else None
    left = wait["until"] - time.time() if wait else 0
    return f"waiting {left:.0f}s for {wait['why']}" if wait and left >= 1 else ""
