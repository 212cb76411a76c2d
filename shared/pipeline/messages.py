"""The queue messages: about one shard, its work order ("shard"), the same again later ("deferred") and its
completion ("done"); a job request (shared.pipeline.job_requests); and a look at a job's evaluation
(shared.pipeline.evaluate)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared import tracing
from shared.jobs.paths import fitted
from shared.ports import MESSAGE_ID_CHARS, OutgoingMessage

if TYPE_CHECKING:
    from shared.jobs.record import JobRecord


def shard_message(kind: str, job: str, shard: int, round_: int = 0) -> OutgoingMessage:
    """A message whose id derives from job, kind, shard and round, so the queue drops repeats; a round resumed with
    a higher budget (shared.pipeline.budget) gets new ids, which its duplicate detection lets through."""
    body = {"job": job, "shard": shard, **({"round": round_} if round_ else {})}
    suffix = f"/r{round_}" if round_ else ""
    return OutgoingMessage(body, message_id=fitted(job, f"/{kind}/{shard}{suffix}", MESSAGE_ID_CHARS),
                           properties=tracing.message_properties())


def deferred_shard(body: dict[str, Any], until: float) -> OutgoingMessage:
    """The shard message again, delivered at `until` (epoch seconds): a throttled shard, or one whose provider batch
    has not ended. Its id is new per deferral and repeatable."""
    deferrals = int(body.get("deferrals", 0)) + 1
    again = {**body, "deferrals": deferrals}
    when = datetime.fromtimestamp(until, UTC)
    return OutgoingMessage(again, message_id=fitted(str(body["job"]), f"/shard/{body['shard']}/deferred/{deferrals}",
                                                    MESSAGE_ID_CHARS),
                           scheduled_at=when)


def job_request(body: dict[str, Any], job: str) -> OutgoingMessage:
    """A job request for `job`, its id from the job and the action (and a resume's budget), so the queue drops a
    repeated request while a resume with another budget goes through."""
    action = str(body.get("action"))
    suffix = f"/resume/{body.get('budget_tokens')}" if action == "resume" else f"/{action}"
    return OutgoingMessage(body, message_id=fitted(job, suffix, MESSAGE_ID_CHARS),
                           properties=tracing.message_properties())


def evaluation_message(record: JobRecord, polls: int = 0, at: float | None = None) -> OutgoingMessage:
    """The message for one look at the evaluation: the first (`polls` 0), or the `polls`-th look again, scheduled
    at `at`. Its id follows from the job, the attempt and `polls`, so the queue drops a repeat."""
    body = {"job": record.job, "attempt": record.attempt, "polls": polls}
    when = datetime.fromtimestamp(at, UTC) if at is not None else None
    return OutgoingMessage(body, message_id=fitted(record.job, f"/evaluate/{record.attempt}/{polls}",
                                                   MESSAGE_ID_CHARS),
                           scheduled_at=when, properties=tracing.message_properties())
