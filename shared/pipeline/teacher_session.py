"""The teacher as a shard worker sees it: the job's rate limiter, the response cache, and throttled shards sent back.

Every worker of a job in this process shares one limiter (shared.teacher.ratelimit), per teacher address and limits.
When the limiter would hold a call longer than `Settings.defer_after_seconds` (set in Azure, where a function
sleeping holds its message lock), the row is left unlabelled and the shard message goes back to the queue, scheduled
for when the limit allows; the rows answered meanwhile are in the response cache, so the next delivery does not pay
for them again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from shared.jobs.paths import JobPaths
from shared.manifest.model import Manifest
from shared.ports import OutgoingMessage
from shared.rows import Row
from shared.services import Services
from shared.teacher.batch import BatchStep, advance_batch, batch_origin
from shared.teacher.cache import CachedTeacher, ResponseCache
from shared.teacher.ratelimit import shared_limiter


@contextlib.asynccontextmanager
async def open_teacher(services: Services, job: str, manifest: Manifest, base_url: str | None,
                       failed: Mapping[str, str] | None = None) -> AsyncIterator[CachedTeacher]:
    """The job's teacher client, paced by the job's limiter, behind the cache unless the manifest turns it off;
    `failed`: requests batch mode gave up on (shared.teacher.batch), rejected without a call."""
    from shared.teacher.client import TeacherClient  # openai: imported by the first shard, not by every function

    teacher, limits = manifest.teacher, manifest.limits
    limiter = shared_limiter((job, base_url or teacher.url or "", teacher.model),
                             limits.requests_per_minute, limits.tokens_per_minute)
    cache = ResponseCache(services.store, services.settings.cache_container) if manifest.cache else None
    async with TeacherClient(teacher, manifest.inference, environ=services.environ, base_url=base_url,
                             limiter=limiter, max_wait=services.settings.defer_after_seconds) as client:
        origin = batch_origin(job) if manifest.batch.enabled else None
        yield CachedTeacher(client, teacher, cache, failed, origin)


async def batch_step(services: Services, paths: JobPaths, shard: int, manifest: Manifest,
                     rows: list[tuple[str, Row]], base_url: str | None) -> BatchStep:
    """One step of the shard's batch (shared.teacher.batch)."""
    from shared.teacher.client import TeacherClient

    cache = ResponseCache(services.store, services.settings.cache_container)
    async with TeacherClient(manifest.teacher, manifest.inference, environ=services.environ,
                             base_url=base_url) as client:
        return await advance_batch(client, cache, paths, shard, manifest, rows)


def deferred_shard(body: dict[str, Any], until: float) -> OutgoingMessage:
    """The shard message again, delivered at `until` (epoch seconds); its id is new per deferral and repeatable."""
    deferrals = int(body.get("deferrals", 0)) + 1
    again = {**body, "deferrals": deferrals}
    when = datetime.fromtimestamp(until, UTC)
    return OutgoingMessage(again, message_id=f"{body['job']}/shard/{body['shard']}/deferred/{deferrals}",
                           scheduled_at=when)


def latest(times: Iterable[float | None]) -> float | None:
    """The latest of the times given, None when there is none."""
    return max((t for t in times if t is not None), default=None)
