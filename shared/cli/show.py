"""How a job is shown to the user: its summary (local and deployed jobs alike)."""

from __future__ import annotations

from pathlib import Path

from shared.joblog import metrics_text
from shared.jobs.record import JobRecord
from shared.jobs.stage import evaluation_line, waiting


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
