"""Cancelling a job: generation stops, the results so far are kept.

`distill cancel` marks the job record (`cancel`). Teacher workers notice it within `cancel_check_seconds` and send
no more of the job's rows to the teacher: each row left is rejected with reason `cancelled`, so every input row still
ends in the dataset or in rejected.jsonl. The shards complete as usual; the aggregator assembles what was labelled and
ends the job `cancelled` instead of starting a fine-tune. Cancelling again, or cancelling a finished job, changes
nothing. A fine-tune already under way is not stopped here: it belongs to its service (AzureML).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.jobs.blobs import dumps, now
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobRecord, create_record, new_record, update_record
from shared.ports import BlobStore
from shared.reasons import Reason
from shared.tasks.base import Rejected

SKIPPED = Rejected(Reason.CANCELLED, "the job was cancelled before this row was sent to the teacher", "")


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    record: JobRecord
    marked: bool  # this call marked the job (False: it already was, or it is past cancelling)

    @property
    def refused(self) -> str | None:
        """Why the job cannot be cancelled, when it cannot."""
        if self.record.cancel or self.record.final:
            return None
        if self.record.state == "evaluating":
            return "its fine-tune is done and the evaluation is under way; it ends on its own"
        name = self.record.finetune.name if self.record.finetune else None
        return f"the fine-tune {name} is already under way; cancel that run in its service (AzureML)"


def request_cancel(store: BlobStore, paths: JobPaths) -> CancelOutcome:
    """Mark the job cancelled (a job submitted and not yet ingested gets its record now, already marked)."""
    requested = now()
    fresh = new_record(paths.job, cancel_requested=requested)
    if create_record(store, paths, fresh):  # written only if there is no record yet
        outcome = CancelOutcome(fresh, True)
    else:
        record = update_record(store, paths, lambda r: r.mark_cancel(requested))
        outcome = CancelOutcome(record, record.cancel == {"requested": requested})
    if outcome.record.cancel:  # after the record: it holds the truth
        stop_teacher_calls(store, paths, outcome.record.cancel)
    return outcome


def stop_teacher_calls(store: BlobStore, paths: JobPaths, why: dict[str, float]) -> None:
    """Write the small blob teacher workers look for: they send no more of the job's rows (`CancelWatch`)."""
    store.write(paths.cancel_flag, dumps(why))


class CancelWatch:
    """Whether a job has been cancelled (or has failed: shared.pipeline.dead_letters), looking for its small cancel
    blob at most every `every` seconds (and on the first call), so that many teacher workers polling never read the
    busy job record."""

    def __init__(self, store: BlobStore, paths: JobPaths, every: float) -> None:
        self._store, self._paths, self._every = store, paths, every
        self._checked: float | None = None
        self._cancelled = False

    def __call__(self) -> bool:
        if self._cancelled:
            return True
        if self._checked is None or time.monotonic() - self._checked >= self._every:
            self._cancelled = self._store.read(self._paths.cancel_flag) is not None
            self._checked = time.monotonic()
        return self._cancelled


class JobCancelled(Exception):
    """The job was cancelled: the row waiting for a teacher call is not sent."""


class CancelGate:
    """A semaphore for teacher calls that, once a call's turn comes, raises JobCancelled if the job was cancelled."""

    def __init__(self, gate: asyncio.Semaphore, cancelled: Callable[[], bool]) -> None:
        self._gate, self._cancelled = gate, cancelled

    async def __aenter__(self) -> None:
        await self._gate.acquire()
        if self._cancelled():
            self._gate.release()
            raise JobCancelled

    async def __aexit__(self, *exc: object) -> None:
        self._gate.release()
