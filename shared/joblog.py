"""Structured log records for the pipeline: job, shard and row ids, the trace, and metrics, as `extra` fields.

Application Insights keeps a record's `extra` fields as custom dimensions, so `customDimensions.job_id` finds every
line of one job and `customDimensions.trace_id` ties them to the job's trace. The message text names the ids too,
for log readers that drop the fields. Never pass a secret (a key, a token, a connection string) as a field.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from shared import tracing

Metrics = Mapping[str, int | float]


def fields(job: str, shard: int | None = None, row: str | None = None, **more: Any) -> dict[str, Any]:
    """The `extra` of a pipeline log record: ids, the current trace and span, and any further dimensions."""
    out: dict[str, Any] = {"job_id": job}
    if shard is not None:
        out["shard"] = shard
    if row is not None:
        out["row_id"] = row
    context = tracing.current()
    if context is not None:
        out.update(trace_id=context.trace_id, span_id=context.span_id)
    out.update(more)
    return out


def emit_metrics(log: logging.Logger, job: str, scope: str, metrics: Metrics, shard: int | None = None) -> None:
    """One record with every counter as a dimension `metric_<name>` (Application Insights: customDimensions)."""
    text = metrics_text(metrics)
    where = f"job {job}" if shard is None else f"job {job} shard {shard}"
    log.info("%s %s metrics: %s", where, scope, text,
             extra=fields(job, shard, metric_scope=scope, **{f"metric_{k}": v for k, v in metrics.items()}))


def metrics_text(metrics: Metrics) -> str:
    """Counters as one readable phrase: `rows_accepted 10, throttled 0`."""
    return ", ".join(f"{name} {value:g}" for name, value in metrics.items())
