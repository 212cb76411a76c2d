"""App settings the pipeline reads (environment variables, which is how Azure Functions passes app settings)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    """Container and queue names match the bindings in `functions/`; the rest comes from app settings."""

    input_container: str = "input"
    jobs_container: str = "jobs"
    shard_queue: str = "shards"
    completion_queue: str = "completions"
    request_queue: str = "jobs"  # job requests: start, cancel, resume (shared.pipeline.job_requests)
    evaluation_queue: str = "evaluations"  # a fine-tuned job's evaluation (shared.pipeline.evaluate)
    shard_rows: int = 50  # rows per shard: at 10 calls in flight and ~10 s a call, ~50 s of work per message
    workspace_topic: str | None = None  # the AzureML workspace resource id whose run events we accept
    finetune_claim_seconds: float = 600.0  # a fine-tune start claimed this long ago and not done is taken over
    cancel_check_seconds: float = 2.0  # a teacher worker re-reads the job record this often to notice a cancel
    price_prompt_per_1k: float | None = None  # the teacher's price per 1,000 prompt tokens, for the cost metric
    price_completion_per_1k: float | None = None  # and per 1,000 completion tokens
    cache_container: str = "teacher-cache"  # the response cache (shared.teacher.cache)
    defer_after_seconds: float | None = 20.0  # a rate-limit wait longer than this sends the shard back (None: wait)
    evaluation_poll_seconds: float = 30.0  # how often a deployment the evaluation waits for is looked at
    evaluation_claim_seconds: float = 1800.0  # a scoring claimed this long ago and not ended is taken over
    event_source: str = "/distill/local"  # the CloudEvents `source` of Distill's own events: the app that sent them

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        default = cls()  # (with slots, the class attributes are descriptors, not the defaults)
        return cls(
            shard_rows=int(environ.get("DISTILL_SHARD_ROWS", default.shard_rows)),
            workspace_topic=environ.get("DISTILL_WORKSPACE_TOPIC") or None,
            finetune_claim_seconds=float(environ.get("DISTILL_FINETUNE_CLAIM_SECONDS", default.finetune_claim_seconds)),
            cancel_check_seconds=float(environ.get("DISTILL_CANCEL_CHECK_SECONDS", default.cancel_check_seconds)),
            price_prompt_per_1k=_number(environ.get("DISTILL_PRICE_PROMPT_PER_1K")),
            price_completion_per_1k=_number(environ.get("DISTILL_PRICE_COMPLETION_PER_1K")),
            defer_after_seconds=float(environ.get("DISTILL_DEFER_AFTER_SECONDS", default.defer_after_seconds)),
            event_source=environ.get("DISTILL_EVENT_SOURCE") or default.event_source,
        )


def _number(value: str | None) -> float | None:
    return float(value) if value else None
