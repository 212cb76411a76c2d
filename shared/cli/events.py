"""`distill events [JOB] [--follow] [--remote]`: the events a job published (its `events.jsonl`), one CloudEvent JSON
object per line; all jobs' without JOB, in the order they happened."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from shared.jobs.paths import JOB_ID_RULE, JobPaths, is_job_id
from shared.jobs.record import read_record
from shared.ports import BlobStore
from shared.settings import Settings

FOLLOW_SECONDS = 1.0


def events(args: argparse.Namespace, *, sleep: Callable[[float], None] = time.sleep) -> int:
    if args.job and not is_job_id(args.job):
        print(f"distill events: {args.job!r} is not a job id: {JOB_ID_RULE}", file=sys.stderr)
        return 2
    store = remote_store() if args.remote else local_store()
    container = Settings().jobs_container
    if args.job and read_record(store, JobPaths(container, args.job)) is None:
        print(f"no job {args.job} here", file=sys.stderr)
        return 1
    printed: dict[str, int] = {}  # job → lines printed
    while True:
        jobs = [args.job] if args.job else job_ids(store, container)
        for line in sorted(new_lines(store, container, jobs, printed), key=lambda line: json.loads(line)["time"]):
            print(line, flush=True)
        if not args.follow or (args.job and settled(store, JobPaths(container, args.job))):
            return 0
        sleep(FOLLOW_SECONDS)


def new_lines(store: BlobStore, container: str, jobs: list[str], printed: dict[str, int]) -> list[str]:
    """The events of these jobs not printed yet (and note them printed)."""
    lines = []
    for job in jobs:
        blob = store.read(JobPaths(container, job).events)
        known = blob.data.decode("utf-8").splitlines() if blob else []
        lines += known[printed.get(job, 0):]
        printed[job] = len(known)
    return lines


def settled(store: BlobStore, paths: JobPaths) -> bool:
    """The job has ended and published everything."""
    record = read_record(store, paths)
    return record is not None and record.final and not record.outbox


def job_ids(store: BlobStore, container: str) -> list[str]:
    return sorted({path.split("/")[1] for path in store.list(f"{container}/") if path.endswith("/events.jsonl")})


def local_store() -> BlobStore:
    from shared.local.run import home, open_store

    return open_store(home())


def remote_store() -> BlobStore:
    from shared.cli.remote import open_store

    return open_store()
