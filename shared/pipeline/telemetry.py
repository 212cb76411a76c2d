"""What the pipeline handlers log and count: one record per rejected row, per shard and per job, with metrics.

Metrics (rows, tokens, the teacher's 429s and, when prices are set, cost) go into the job record's `metrics` and into
log records whose dimensions Application Insights keeps (shared.joblog).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shared.joblog import emit_metrics, fields
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.pipeline.label import Labelled

log = logging.getLogger(__name__)


def log_shard(job: str, shard: int, results: Sequence[Labelled], counters: Mapping[str, int]) -> None:
    """A record per rejected row (accepted rows at DEBUG), then the shard's metrics."""
    for r in results:
        ids = fields(job, shard, r.row.id, split=r.split, tokens=r.usage.total)
        if r.rejection is None:
            log.debug("job %s shard %d row %s labelled", job, shard, r.row.id, extra=ids)
        else:
            log.info("job %s shard %d row %s rejected: %s", job, shard, r.row.id, r.rejection.reason.value,
                     extra={**ids, "reason": r.rejection.reason.value})
    emit_metrics(log, job, "shard", {
        "rows_accepted": sum(r.rejection is None for r in results),
        "rows_rejected": sum(r.rejection is not None for r in results),
        "tokens_prompt": sum(r.usage.prompt_tokens for r in results),
        "tokens_completion": sum(r.usage.completion_tokens for r in results),
        "throttled": counters.get("throttled", 0),
    }, shard=shard)


def job_metrics(counts: Mapping[str, int], settings: Settings) -> dict[str, Any]:
    """The job's totals from the assembled counts; `cost` only when the token prices are set."""
    accepted = counts.get("train", 0) + counts.get("validation", 0)
    prompt, completion = counts.get("prompt_tokens", 0), counts.get("completion_tokens", 0)
    metrics: dict[str, Any] = {
        "rows_accepted": accepted, "rows_rejected": counts.get("rejected", 0),
        "tokens_prompt": prompt, "tokens_completion": completion, "tokens_total": prompt + completion,
        "throttled": counts.get("throttled", 0),
    }
    if settings.price_prompt_per_1k is not None and settings.price_completion_per_1k is not None:
        metrics["cost"] = round(prompt / 1000 * settings.price_prompt_per_1k
                                + completion / 1000 * settings.price_completion_per_1k, 6)
    return metrics


def log_job_metrics(job: str, metrics: Mapping[str, int | float]) -> None:
    emit_metrics(log, job, "job", metrics)
