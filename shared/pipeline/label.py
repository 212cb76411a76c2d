"""The label step: the teacher answers every row of one shard, the shard's result is written as one blob, and its
completion is sent.

A redelivered shard whose result already exists is completed without calling the teacher again. When the job's rate
limiter would hold a call longer than `Settings.defer_after_seconds` (set in Azure, where a function sleeping holds its
message lock), the shard message goes back to the queue, scheduled for when the limit allows; the rows answered
meanwhile are in the response cache, so the next delivery does not pay for them again. In batch mode the shard waits,
the same way, for its provider batch to end (shared.teacher.batch).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared.consensus import disagreement, majority
from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.jobs.record import read_record, update_record
from shared.jobs.shards import ResultHeader, RowResult, decode_shard, encode_result, merge_result, stopped_rows
from shared.manifest.load import stored_manifest
from shared.manifest.model import Manifest
from shared.pipeline import budget as budgets
from shared.pipeline import interrupt
from shared.pipeline.cancel import SKIPPED, CancelGate, CancelWatch, JobCancelled
from shared.pipeline.messages import deferred_shard, shard_message
from shared.pipeline.pace import PaceSharer, start_from_shared
from shared.pipeline.telemetry import log_shard
from shared.ports import Conflict
from shared.prompts import teacher_conversations
from shared.rows import Row
from shared.services import Services
from shared.tasks.base import Accepted, Rejected
from shared.teacher.batch import BatchStep, advance_batch, batch_origin
from shared.teacher.cache import CachedTeacher, ResponseCache, cache_key
from shared.teacher.ratelimit import RATE_LIMIT, Throttled
from shared.teacher.replies import TeacherCallFailed, Usage

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class Labelled:
    """One row's outcome: every answer accepted, or the first rejection."""

    row: Row
    split: str
    answers: list[Accepted] | None
    rejection: Rejected | None
    usage: Usage
    tokens_saved: int = 0  # tokens of the replies answered from the response cache
    cache_hits: int = 0
    deferred_until: float | None = None  # throttled: label again at this time (epoch seconds)
    agreement: float | None = None  # prompt.samples: the share of the samples that gave the kept answer

    def result(self) -> RowResult:
        """The row's line in the shard result."""
        answers = tuple(self.answers) if self.answers is not None else None
        return RowResult(self.row.id, self.split, self.row.source, self.row.line, self.usage.total, answers,
                         self.rejection, self.agreement)


def label_shard(services: Services, body: dict[str, Any]) -> None:
    """Handle one shard message `{"job": ..., "shard": n}`."""
    job, shard = str(body["job"]), int(body["shard"])
    store, settings = services.store, services.settings
    paths = JobPaths(settings.jobs_container, job)
    earlier = store.read(paths.result(shard))
    stopped = stopped_rows(earlier.data) if earlier is not None else set()
    if earlier is None or stopped:
        record = read_record(store, paths)
        if record is None or record.final:
            log.info("job %s shard %d: the job is %s; not labelling", job, shard, record.state if record else "unknown")
            return
        manifest = stored_manifest(store, paths)
        rows = [(split, row) for split, row in decode_shard(store.read(paths.shard(shard)).data)
                if earlier is None or row.id in stopped]
        failed = None
        if manifest.batch.enabled:  # batch mode: label only once the shard's batch has ended
            step = interrupt.run(batch_step(services, paths, shard, manifest, rows))
            if step.wait_until is not None:
                services.queue.send(settings.shard_queue, [deferred_shard(body, step.wait_until)])
                return
            failed = step.failed
        budget = budgets.Budget.for_shard(store, paths, shard, manifest)
        counters: Counter[str] = Counter()
        results = interrupt.run(label_rows(services, job, manifest, rows, budget=budget, counters=counters,
                                         failed=failed))
        if (until := latest(r.deferred_until for r in results)) is not None:
            update_record(store, paths, lambda record: record.wait(until, RATE_LIMIT))
            services.queue.send(settings.shard_queue, [deferred_shard(body, until)])
            return
        log_shard(job, shard, results, counters)
        result = shard_result(shard, results, counters["throttled"])
        try:
            if earlier is None:
                store.write(paths.result(shard), result, if_absent=True)
            else:  # a resumed round: the rows the budget had stopped, now labelled
                store.write(paths.result(shard), merge_result(earlier.data, result), if_match=earlier.etag)
        except Conflict:
            log.info("job %s shard %d: another delivery wrote the result first", job, shard)
    services.queue.send(settings.completion_queue, [shard_message("done", job, shard, int(body.get("round") or 0))])


async def label_rows(services: Services, job: str, manifest: Manifest, rows: list[tuple[str, Row]], *,
                     budget: budgets.Budget | None = None, counters: Counter[str] | None = None,
                     failed: dict[str, str] | None = None) -> list[Labelled]:
    """Label rows with at most `limits.concurrency` teacher calls in flight; results in input order.

    Rows of a cancelled job are not sent (rejected `cancelled`); `counters` gets the teacher's 429s (`throttled`).
    """
    from shared.teacher.factory import open_teacher  # openai: imported by the first shard, not by every function

    paths = JobPaths(services.settings.jobs_container, job)
    cancel = CancelWatch(services.store, paths, services.settings.cancel_check_seconds)
    gate = CancelGate(asyncio.Semaphore(manifest.limits.concurrency), cancel)
    sharer = PaceSharer(services.store, paths)
    async with open_teacher(manifest, job, store=services.store, settings=services.settings,
                            environ=services.environ, local_url=services.local_teacher_url, failed=failed,
                            on_wait=functools.partial(note_wait, services, job)) as client:
        limiter = client.teacher.limiter
        if limiter is not None:  # another instance may have learned the pace already
            await asyncio.to_thread(start_from_shared, limiter, services.store, paths)

        async def one(split: str, row: Row) -> Labelled:
            try:
                labelled = await label_row(client, gate, manifest, split, row, budget)
            except JobCancelled:
                return Labelled(row, split, None, SKIPPED, Usage())
            if budget is not None and labelled.usage.total:
                budget.count(row.id, labelled.usage.total)  # before any await: the next row's check sees it
                await asyncio.to_thread(budget.publish)
            if limiter is not None and sharer.due:  # at most every few seconds, off the event loop
                await asyncio.to_thread(sharer.share, limiter)
            if services.progress is not None:
                if limiter is not None and (pace := limiter.pace()):
                    services.progress.paced(job, *pace)
                services.progress.row_done(job, int(labelled.answers is not None), int(labelled.rejection is not None),
                                           labelled.usage.total)
            return labelled

        results = list(await asyncio.gather(*(one(split, row) for split, row in rows)))
        if counters is not None:
            counters["throttled"] += client.teacher.throttled
        if limiter is not None and (pace := limiter.pace()):
            await asyncio.to_thread(sharer.share, limiter, force=True)
            update_record(services.store, paths, lambda record: record.paced(*pace))
        return results


def note_wait(services: Services, job: str, seconds: float, why: str) -> None:
    """A long wait for the teacher: shown in the progress line, and in the job record for `distill status`."""
    if services.progress is not None:
        services.progress.waiting(job, seconds, why)
    until = time.time() + seconds
    update_record(services.store, JobPaths(services.settings.jobs_container, job), lambda r: r.wait(until, why))


async def label_row(client: CachedTeacher, gate: CancelGate, manifest: Manifest, split: str, row: Row,
                    budget: budgets.Budget | None = None) -> Labelled:
    """Ask the teacher every question the row needs (one, or one per conversation turn) and judge the replies.

    A spent budget stops a row before its first call, never between the turns of a conversation.
    """
    answers: list[Accepted] = []
    prompt_tokens = completion_tokens = saved = hits = 0
    samples, agreement = manifest.prompt.samples, None
    for turn, messages in enumerate(teacher_conversations(manifest.task, row, manifest.prompt)):
        try:
            async with gate:
                if turn == 0 and budget is not None and not budget.allows():
                    return Labelled(row, split, None, budget.rejection(), Usage())
                replies = await client.complete_samples(messages, samples) if samples > 1 else \
                    [await client.complete(messages)]
        except TeacherCallFailed as exc:
            rejection = Rejected(exc.reason, exc.detail, "")
            return Labelled(row, split, None, rejection, Usage(prompt_tokens, completion_tokens))
        except Throttled as exc:
            return Labelled(row, split, None, None, Usage(prompt_tokens, completion_tokens), deferred_until=exc.until)
        for reply in replies:
            if reply.cached:
                saved, hits = saved + reply.usage.total, hits + 1
            else:
                prompt_tokens += reply.usage.prompt_tokens
                completion_tokens += reply.usage.completion_tokens
        question = messages[-1]["content"]
        verdict = majority(manifest, [(r.content, r.finish_reason) for r in replies], question)
        agreement, outcome = verdict.agreement, verdict.outcome
        if isinstance(outcome, Accepted):
            outcome = disagreement(manifest, outcome, row.reference, question) or outcome
        if isinstance(outcome, Rejected):
            if not outcome.reason.quality_gate:  # unusable: a later attempt asks the teacher anew
                await client.forget(messages, samples)
            return Labelled(row, split, None, outcome, Usage(prompt_tokens, completion_tokens), saved, hits,
                            agreement=agreement)
        answers.append(outcome)
    return Labelled(row, split, answers, None, Usage(prompt_tokens, completion_tokens), saved, hits,
                    agreement=agreement)


def shard_result(shard: int, results: list[Labelled], throttled: int) -> bytes:
    """The shard's result file: its counts (tokens, the teacher's 429s, cache hits), then each row in shard order."""
    header = ResultHeader(
        shard=shard,
        accepted=sum(r.answers is not None for r in results),
        rejected=sum(r.rejection is not None for r in results),
        prompt_tokens=sum(r.usage.prompt_tokens for r in results),
        completion_tokens=sum(r.usage.completion_tokens for r in results),
        throttled=throttled,
        cache_hits=sum(r.cache_hits for r in results),
        tokens_saved=sum(r.tokens_saved for r in results),
    )
    return encode_result(header, [r.result() for r in results])


async def batch_step(services: Services, paths: JobPaths, shard: int, manifest: Manifest,
                     rows: list[tuple[str, Row]]) -> BatchStep:
    """One step of the shard's provider batch (shared.teacher.batch); its state is kept in the job record, the
    failures of its last collected batch beside it."""
    from shared.teacher.factory import adapter_for

    store = services.store
    record = read_record(store, paths)
    state = ((record.batches if record else None) or {}).get(str(shard), {})
    cache = ResponseCache(store, services.settings.cache_container)
    adapter = adapter_for(manifest.teacher, manifest.inference, environ=services.environ,
                          local_url=services.local_teacher_url)
    try:
        requests = {cache_key(manifest.teacher, body): body for body in (
            adapter.request_body(messages) for _, row in rows
            for messages in teacher_conversations(manifest.task, row, manifest.prompt))}
        step = await advance_batch(adapter, cache, requests, state, read_json(store, paths.batch_errors(shard)) or {},
                                   manifest.batch, name=f"{paths.job}-{shard:05d}", origin=batch_origin(paths.job),
                                   metadata={"distill_job": paths.job, "shard": str(shard),
                                             "attempt": record.attempt if record else "0"})
    finally:
        await adapter.aclose()
    if step.errors is not None:
        store.write(paths.batch_errors(shard), dumps(step.errors))
    if step.state != state:
        update_record(store, paths, lambda r: r.set_batch(shard, step.state))
    return step


def latest(times: Iterable[float | None]) -> float | None:
    """The latest of the times given, None when there is none."""
    return max((t for t in times if t is not None), default=None)
