"""What the dashboard reads from storage, a bounded amount per page: the job ids a page at a time (one listing, then
one small `status.json` per job shown), one job's record and fine-tune losses, and its rejected rows a page of bytes at
a time, however large `rejected.jsonl` grows."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shared.jobs.paths import JobPaths, is_job_id
from shared.jobs.record import JobRecord, JobState
from shared.jobs.stage import progress_line
from shared.ports import BlobStore
from shared.reasons import Reason
from shared.report import loss_curves, read_metrics

JOBS_PER_PAGE = 50
READERS = 8  # records read at once for a page of the job list
REJECTED_PAGE_BYTES = 32 * 1024  # the rejected rows shown at once: the whole lines within this many bytes
LONGEST_LINE = 1024 * 1024  # a rejected row's line is read on up to this length to find its end
NOT_LABELLED = (Reason.CANCELLED.value, Reason.BUDGET.value)  # rejected rows that were never sent to the teacher


@dataclass(frozen=True, slots=True)
class JobsPage:
    jobs: list[JobRecord | str]  # a record, or the id of a job whose record is not there (yet) or unreadable
    page: int  # 1-based
    pages: int
    total: int


def jobs_page(store: BlobStore, container: str, page: int) -> JobsPage:
    """One page of jobs in job-id order: a single listing of the job folders, then one record per job shown."""
    names = [name for name in store.folders(f"{container}/") if is_job_id(name)]
    pages = max(1, math.ceil(len(names) / JOBS_PER_PAGE))
    page = min(max(page, 1), pages)
    shown = names[(page - 1) * JOBS_PER_PAGE:page * JOBS_PER_PAGE]
    with ThreadPoolExecutor(READERS) as pool:  # a blob service answers each read in tens of milliseconds
        records = list(pool.map(lambda name: read_record(store, container, name) or name, shown))
    return JobsPage(records, page, pages, len(names))


def read_record(store: BlobStore, container: str, job: str) -> JobRecord | None:
    """The job's record; None when it has none yet or it cannot be read."""
    blob = store.read(JobPaths(container, job).status)
    if blob is None:
        return None
    try:
        return JobRecord.from_json(json.loads(blob.data))
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class JobProgress:
    """How far a job is, as its progress bar shows it."""

    state: str
    done: int  # rows labelled
    total: int
    stage: str  # one line on where the job stands
    final: bool
    updated: float | None
    interrupted: bool = False  # on this machine: not over, and no `distill run` is running it

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "done": self.done, "total": self.total, "stage": self.stage,
                "final": self.final, "updated": self.updated, "interrupted": self.interrupted}


Running = Callable[[str], bool]  # whether a process is running the job now (`distill ui`: a `distill run` holds it)


def progress(record: JobRecord, running: Running | None = None) -> JobProgress:
    """Rows labelled out of the job's rows: every row sent to the teacher once the dataset is assembled, before that
    the rows of the shards done. With `running`, a job not over that nothing runs is marked interrupted."""
    rows = record.rows or {}
    total = rows.get("total", 0)
    if record.accepted is not None and record.state is not JobState.LABELING:  # (a resumed round labels again)
        done = total - sum((record.rejected_by_reason or {}).get(reason, 0) for reason in NOT_LABELLED)
    else:
        per_shard = rows.get("per_shard") or math.ceil(total / max(record.shards or 1, 1))
        done = sum(max(0, min(per_shard, total - shard * per_shard)) for shard in record.shards_done or [])
    interrupted = running is not None and not record.final and not running(record.job)
    stage = progress_line(record) + (f"; interrupted: no `distill run` is running it (the same command with --job "
                                     f"{record.job} continues it)" if interrupted else "")
    return JobProgress(str(record.state), min(done, total), total, stage, record.final, record.updated, interrupted)


@dataclass(frozen=True, slots=True)
class RejectedPage:
    rows: list[dict[str, Any]]  # rejected.jsonl's records; a line that is not one becomes {"unreadable": text}
    offset: int  # where this page starts in the file
    next: int | None  # where the next page starts; None at the end


def rejected_page(store: BlobStore, container: str, job: str, offset: int) -> RejectedPage | None:
    """The whole lines of `rejected.jsonl` from `offset` (moved on to the next line's start when it falls inside a
    line) within about `REJECTED_PAGE_BYTES`; None when the file is not there (the job is not assembled yet)."""
    path = JobPaths(container, job).file("rejected.jsonl")
    start = max(offset, 0)
    if start and store.read_range(path, start - 1, 1) != b"\n":  # inside a line: from the next one
        start += len(_line_from(store, path, start))
    data = store.read_range(path, start, REJECTED_PAGE_BYTES)
    if data is None:
        return None
    end = data.rfind(b"\n") + 1
    if not end:  # one line longer than a page, or the file's last line without its line end
        data = _line_from(store, path, start)
        end = len(data)
    after = start + end
    more = bool(store.read_range(path, after, 1))
    return RejectedPage([_record(line) for line in data[:end].splitlines() if line.strip()], start,
                        after if more else None)


def _line_from(store: BlobStore, path: str, start: int) -> bytes:
    """The bytes from `start` to the next line end (included), the file's end, or `LONGEST_LINE` bytes on."""
    data = b""
    while b"\n" not in data and len(data) < LONGEST_LINE:
        more = store.read_range(path, start + len(data), REJECTED_PAGE_BYTES) or b""
        if not more:
            break
        data += more
    cut = data.find(b"\n") + 1
    return data[:cut] if cut else data[:LONGEST_LINE]


def _record(line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    return record if isinstance(record, dict) else {"unreadable": line.decode("utf-8", "replace")}


def loss_points(store: BlobStore, container: str, job: str) -> list[Any]:
    """The fine-tune's loss curves (shared.report.Curve), [] when it recorded none."""
    return loss_curves(read_metrics(store, JobPaths(container, job)))
