"""The teacher a job calls, built in one place: the adapter for its kind of endpoint (a manifest's `teacher.kind`),
inside retries and rate limiting, inside the response cache. Importing this module imports openai: the pipeline
imports it where a shard is labelled, so loading the Functions app stays light.

Adding a provider: one adapter module implementing `shared.ports.Teacher` (usually a subclass of
`OpenAICompatibleTeacher`), a `TeacherKind` for it in the manifest's schema, and its entry in `ADAPTERS`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping

from shared.manifest.model import InferenceParameters, Manifest, TeacherKind, TeacherSettings
from shared.ports import BlobStore, Teacher
from shared.settings import Settings
from shared.teacher.azure_openai import AzureOpenAITeacher
from shared.teacher.batch import batch_origin
from shared.teacher.cache import CachedTeacher, ResponseCache
from shared.teacher.local_model import LocalModelTeacher
from shared.teacher.openai_compatible import OpenAICompatibleTeacher
from shared.teacher.ratelimit import LIMITERS, RateLimiter
from shared.teacher.replies import TeacherConfigError
from shared.teacher.resilient import ResilientTeacher
from shared.teacher.retry import RetryPolicy

ADAPTERS: dict[TeacherKind, type[OpenAICompatibleTeacher]] = {
    TeacherKind.OPENAI_COMPATIBLE: OpenAICompatibleTeacher,
    TeacherKind.AZURE_AI: OpenAICompatibleTeacher,  # serverless and online endpoints speak OpenAI's API
    TeacherKind.AZURE_OPENAI: AzureOpenAITeacher,
    TeacherKind.LOCAL: LocalModelTeacher,
}


def adapter_for(settings: TeacherSettings, inference: InferenceParameters, *, environ: Mapping[str, str] = os.environ,
                local_url: str | None = None) -> OpenAICompatibleTeacher:
    """The adapter for the teacher's kind; a local teacher is reached at `local_url` (the model `distill run`
    serves), any other at its own URL."""
    adapter = ADAPTERS[settings.kind]
    url = local_url if settings.kind is TeacherKind.LOCAL else settings.url
    if adapter is not LocalModelTeacher and not url:
        raise TeacherConfigError("teacher.url is not set")
    return adapter(settings, inference, url, environ=environ)  # type: ignore[arg-type]


def teacher_for(settings: TeacherSettings, inference: InferenceParameters, *,
                environ: Mapping[str, str] = os.environ, local_url: str | None = None,
                retry: RetryPolicy | None = None, limiter: RateLimiter | None = None,
                max_wait: float | None = None, on_wait: Callable[[float, str], None] | None = None) -> ResilientTeacher:
    """The teacher's adapter with retries (`retry`, default: the teacher's max_retries) and pacing (`limiter`;
    a wait longer than `max_wait` raises Throttled)."""
    adapter: Teacher = adapter_for(settings, inference, environ=environ, local_url=local_url)
    return ResilientTeacher(adapter, retry=retry or RetryPolicy(max_retries=settings.max_retries),
                            max_tokens=inference.max_tokens, limiter=limiter, max_wait=max_wait, on_wait=on_wait)


@contextlib.asynccontextmanager
async def open_teacher(manifest: Manifest, job: str, *, store: BlobStore, settings: Settings,
                       environ: Mapping[str, str], local_url: str | None,
                       failed: Mapping[str, str] | None = None,
                       on_wait: Callable[[float, str], None] | None = None) -> AsyncIterator[CachedTeacher]:
    """A job's teacher: paced by the limiter every worker of the job in this process shares, behind the response
    cache unless the manifest turns it off; `failed`: requests batch mode gave up on, rejected without a call.

    When the limiter would hold a call longer than `Settings.defer_after_seconds` (set in Azure, where a function
    sleeping holds its message lock), the call raises Throttled, so the shard can be handed back as a scheduled
    message instead.
    """
    teacher, limits = manifest.teacher, manifest.limits
    key = (job, local_url or teacher.url or "", teacher.model)
    with LIMITERS.use(key, limits.requests_per_minute, limits.tokens_per_minute) as limiter:
        cache = ResponseCache(store, settings.cache_container) if manifest.cache else None
        async with teacher_for(teacher, manifest.inference, environ=environ, local_url=local_url, limiter=limiter,
                               max_wait=settings.defer_after_seconds, on_wait=on_wait) as calls:
            origin = batch_origin(job) if manifest.batch.enabled else None
            yield CachedTeacher(calls, teacher, cache, failed, origin)
