"""A content-addressed cache of teacher replies in blob storage: the same question is never paid for twice.

The key is the SHA-256 of everything that determines a reply: the teacher (kind, URL, model), the exact request body
(model, messages, inference parameters) and the prompt version. A reply lands at `<container>/<2 hex>/<key>.json` by
a create-only write, so concurrent writers of the same key cannot clash: the first one wins, and every copy of a reply
for one key is as good as any other. Only replies the teacher actually sent (HTTP 2xx) are kept; failed calls are not,
and a reply the task rejects as unusable is dropped again, so a later attempt asks the teacher anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.jobs.blobs import dumps
from shared.manifest.model import TeacherSettings
from shared.ports import BlobStore, Conflict
from shared.prompts import PROMPT_VERSION
from shared.reasons import Reason
from shared.teacher.replies import TeacherCallFailed, TeacherReply, Usage
from shared.teacher.resilient import trusted_usage

if TYPE_CHECKING:
    from shared.teacher.resilient import ResilientTeacher

log = logging.getLogger(__name__)


def cache_key(teacher: TeacherSettings, body: dict, sample: int = 0) -> str:
    """The key of a request: sha256 over teacher, request body and prompt version (canonical JSON); the `sample`-th
    answer to the same request (prompt.samples) has its own key, the first one the request's."""
    identity = {"teacher": {"kind": teacher.kind.value, "url": teacher.url, "model": teacher.model},
                "body": body, "prompt_version": PROMPT_VERSION, **({"sample": sample} if sample else {})}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, store: BlobStore, container: str) -> None:
        self.store = store
        self._container = container

    def path(self, key: str) -> str:
        return f"{self._container}/{key[:2]}/{key}.json"

    def get(self, key: str, origin: str | None = None) -> TeacherReply | None:
        """The kept reply; `cached` is False when it was kept for `origin` (a job's own batch: paid by that job)."""
        blob = self.store.read(self.path(key))
        if blob is None:
            return None
        try:
            doc = json.loads(blob.data)
            usage = Usage(int(doc["prompt_tokens"]), int(doc["completion_tokens"]))
            cached = origin is None or doc.get("origin") != origin
            return TeacherReply(doc["content"], doc["finish_reason"], usage, attempts=0, latency_s=0.0, cached=cached)
        except (ValueError, KeyError, TypeError) as exc:  # an unreadable entry is a miss; the next put cannot fix it
            log.warning("teacher cache entry %s is unreadable (%s); calling the teacher", key, exc)
            return None

    def put(self, key: str, reply: TeacherReply, origin: str | None = None) -> None:
        """Keep a reply; a reply already kept under the key stays (create-only, so safe to repeat)."""
        doc = {"content": reply.content, "finish_reason": reply.finish_reason, "origin": origin,
               "prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens}
        with contextlib.suppress(Conflict):  # another writer kept it first
            self.store.write(self.path(key), dumps(doc), if_absent=True)


    def forget(self, key: str) -> None:
        """Drop a kept reply (one that proved unusable), so the next request for it asks the teacher again."""
        self.store.delete(self.path(key))


class CachedTeacher:
    """A teacher client that answers from the cache when it can, and keeps every new reply in it.

    `cache` None bypasses the cache (`--no-cache`): nothing is read or written. `failed` (cache key → why) names
    requests that must not be sent (batch mode gave up on them): they fail as a teacher error.
    """

    def __init__(self, teacher: ResilientTeacher, settings: TeacherSettings, cache: ResponseCache | None,
                 failed: Mapping[str, str] | None = None, origin: str | None = None) -> None:
        self.teacher = teacher
        self._origin = origin  # replies kept for this origin were paid by this job (its batches): not savings
        self._settings = settings
        self._cache = cache
        self._failed = failed or {}

    async def complete(self, messages: list[dict]) -> TeacherReply:
        if self._cache is None:
            return await self.teacher.complete(messages)
        body = self.teacher.request_body(messages)
        key = cache_key(self._settings, body)
        if key in self._failed:
            raise TeacherCallFailed(Reason.TEACHER_ERROR, self._failed[key], attempts=1)
        hit = await asyncio.to_thread(self._cache.get, key, self._origin)
        if hit is not None:  # a batch's reply is kept as the teacher sent it: its counts are checked here
            return trusted_usage(hit, messages, body.get("max_tokens"))
        reply = await self.teacher.complete(messages)
        await asyncio.to_thread(self._cache.put, key, reply)
        return reply

    async def complete_samples(self, messages: list[dict], samples: int) -> list[TeacherReply]:
        """`samples` answers to one question, each kept under its own key (so asking for more later pays only for
        the new ones); those not kept yet are asked for at once (shared.teacher.resilient.complete_choices)."""
        if self._cache is None:
            return await self.teacher.complete_choices(messages, samples)
        body = self.teacher.request_body(messages)
        keys = [cache_key(self._settings, body, sample) for sample in range(samples)]
        kept = [await asyncio.to_thread(self._cache.get, key, self._origin) for key in keys]
        replies = [trusted_usage(hit, messages, body.get("max_tokens")) if hit else None for hit in kept]
        missing = [index for index, reply in enumerate(replies) if reply is None]
        if missing:
            fresh = await self.teacher.complete_choices(messages, len(missing), first=samples - len(missing))
            for index, reply in zip(missing, fresh, strict=True):
                await asyncio.to_thread(self._cache.put, keys[index], reply)
                replies[index] = reply
        return [reply for reply in replies if reply is not None]

    async def forget(self, messages: list[dict], samples: int = 1) -> None:
        """Drop the kept replies to `messages` (its `samples` answers): they were unusable, and a later attempt must
        ask the teacher again (a fixed teacher, or one that samples, may answer well) rather than replay them."""
        if self._cache is not None:
            body = self.teacher.request_body(messages)
            for sample in range(samples):
                await asyncio.to_thread(self._cache.forget, cache_key(self._settings, body, sample))
