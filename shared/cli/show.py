"""How a job is shown to the user: its summary, and its progress in one line (local and deployed jobs alike)."""

from __future__ import annotations

import time
from pathlib import Path

from shared.evaluation import ROLES
from shared.joblog import metrics_text
from shared.jobs.record import JobRecord, JobState


def summary(record: JobRecord, folder: Path | str) -> str:
    lines = [f"job {record.job}: {record.state}"]
    if record.accepted is not None:
        accepted, tokens = record.accepted, record.tokens or {}
        lines.append(f"  rows: {accepted['train']} train + {accepted['validation']} validation accepted, "
                     f"{record.rejected} rejected (success ratio {record.success_ratio or 0:.1%})")
        if record.rejected_by_reason:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(record.rejected_by_reason.items()))
            lines.append(f"  rejected by reason: {reasons}")
        if record.filtered:
            lines.append(f"  of which kept out by a quality gate (not counted against min_success_ratio): "
                         f"{sum(record.filtered.values())}")
        if refs := record.references:
            lines.append(f"  the teacher's answers agree with the reference answers on {refs['agreed']} of "
                         f"{refs['checked']} rows")
        lines.append(f"  tokens: {tokens.get('prompt', 0):,} prompt + {tokens.get('completion', 0):,} completion")
    if ft := record.finetune:
        note = " (export only: the dataset was exported, no training ran yet)" if record.exported_only else ""
        lines.append(f"  fine-tune {ft.name}: {ft.status or 'not finished'}{note}")
    if evaluation := evaluation_line(record):
        lines.append(f"  {evaluation}")
    if wait := waiting(record):
        lines.append(f"  {wait}")
    if record.reason:
        lines.append(f"  stopped: {record.reason}")
    lines += [f"  error: {error}" for error in record.errors]
    if missed := record.events_missed:
        where = ", ".join(sorted({m["to"] for m in missed}))
        lines.append(f"  events: {len(missed)} not delivered to {where} (all are in events.jsonl: distill events "
                     f"{record.job})")
    lines.append(f"  files: {folder}")
    return "\n".join(lines)


def described(record: JobRecord, folder: str) -> str:
    """The summary with the job's metrics and trace id (a deployed job's)."""
    lines = [summary(record, folder)]
    if record.metrics:
        lines.append(f"  metrics: {metrics_text(record.metrics)}")
    if record.trace_id:
        lines.append(f"  trace: {record.trace_id} (Application Insights operation id)")
    return "\n".join(lines)


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
