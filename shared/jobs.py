"""A job's folder in the jobs container, its states, and its record (`status.json`) updated by compare-and-swap.

Layout of `jobs/<job>/`:

    manifest.json            the manifest as ingested (native form, data paths as blob paths)
    validation-report.json   what validation found, per file
    plan.json                shard count and row counts, written once before any shard is sent
    shards/NNNNN.jsonl       shard inputs: one row per line
    results/NNNNN.jsonl      shard results: a header line, then one line per row (accepted or rejected)
    train.jsonl, validation.jsonl, rejected.jsonl   the assembled outputs, in input order
    status.json              the job record: state, counts, tokens, metrics, timings, fine-tune, errors, trace_id,
                             and `cancel` once `distill cancel` asked for it
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.ports import BlobStore, Conflict

Record = dict[str, Any]
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
JOB_ID_RULE = "a job id is 1 to 128 letters, digits, '.', '_' and '-', starting with a letter or digit, without '..'"


def is_job_id(job: str) -> bool:
    """Whether `job` is safe as one folder name in storage and on disk (no traversal, no encoding tricks)."""
    return JOB_ID.fullmatch(job) is not None and ".." not in job


class JobState(StrEnum):
    INGESTING = "ingesting"
    LABELING = "labeling"
    ASSEMBLING = "assembling"
    FINE_TUNING = "fine-tuning"
    DATASET_READY = "dataset ready"  # goal state of --no-finetune
    BUDGET_SPENT = "budget spent"  # stopped by the token budget; a higher budget goes on (pipeline.budget)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # `distill cancel`: generation stopped, the rows labelled so far assembled, no fine-tune

    @property
    def final(self) -> bool:
        return self in (JobState.DATASET_READY, JobState.BUDGET_SPENT, JobState.SUCCEEDED, JobState.FAILED,
                        JobState.CANCELLED)


@dataclass(frozen=True, slots=True)
class JobPaths:
    container: str
    job: str

    @property
    def root(self) -> str:
        return f"{self.container}/{self.job}"

    def file(self, name: str) -> str:
        return f"{self.root}/{name}"

    @property
    def status(self) -> str:
        return self.file("status.json")

    @property
    def manifest(self) -> str:
        return self.file("manifest.json")

    @property
    def plan(self) -> str:
        return self.file("plan.json")

    def shard(self, index: int) -> str:
        return self.file(f"shards/{index:05d}.jsonl")

    def result(self, index: int) -> str:
        return self.file(f"results/{index:05d}.jsonl")


def now() -> float:
    return round(time.time(), 3)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")


def read_json(store: BlobStore, path: str) -> Any | None:
    blob = store.read(path)
    return None if blob is None else json.loads(blob.data)


def create_record(store: BlobStore, paths: JobPaths, record: Record) -> bool:
    """Write the job record if there is none yet; False when one exists (a repeated event)."""
    try:
        store.write(paths.status, dumps(record), if_absent=True)
    except Conflict:
        return False
    return True


def update_record(store: BlobStore, paths: JobPaths, change: Callable[[Record], Record | None]) -> Record:
    """Apply `change` to the job record atomically (ETag compare-and-swap, retried on conflict).

    `change` gets a copy and returns the new record, or None to leave it as it is. Returns the record as stored.
    """
    return update_json(store, paths.status, change, stamp=True)


def update_json(store: BlobStore, path: str, change: Callable[[dict], dict | None], *, create: bool = False,
                stamp: bool = False) -> dict:
    """Apply `change` to a JSON blob by ETag compare-and-swap, retried on conflict; returns the blob as stored.

    `change` gets a copy and returns the new value, or None to leave it as it is. A missing blob starts as `{}` when
    `create`, else raises LookupError. `stamp` sets "updated" on every write.
    """
    while True:
        blob = store.read(path)
        if blob is None and not create:
            raise LookupError(f"{path} does not exist")
        current = json.loads(blob.data) if blob else {}
        updated = change(json.loads(blob.data) if blob else {})
        if updated is None or updated == current:
            return current
        if stamp:
            updated["updated"] = now()
        try:
            if blob is None:
                store.write(path, dumps(updated), if_absent=True)
            else:
                store.write(path, dumps(updated), if_match=blob.etag)
        except Conflict:
            continue
        return updated


def fail(record: Record, error: str) -> Record:
    """The record moved to failed with a readable error (a final record stays as it is)."""
    if JobState(record["state"]).final:
        return record
    record["state"] = JobState.FAILED
    record.setdefault("errors", []).append(error)
    record.setdefault("timings", {})["finished"] = now()
    return record
