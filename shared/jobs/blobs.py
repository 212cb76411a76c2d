"""A job's blobs: JSON read and written, the compare-and-swap that changes them safely under concurrent and repeated
handlers, and the final files copied out of storage."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.jobs.paths import FINAL_FILES, JobPaths
from shared.ports import BlobStore, Conflict
from shared.redaction import redact


def now() -> float:
    return round(time.time(), 3)


CAS_TRIES = 20  # compare-and-swap attempts on one blob before giving up (about 30 s of back-off in all)
FIRST_BACKOFF = 0.02  # seconds before the second attempt; doubled each time
MAX_BACKOFF = 2.0
pause = time.sleep  # (tests replace it)


def dumps(value: Any) -> bytes:
    """A JSON document as stored, without any configured secret (shared.redaction)."""
    return redact(json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True)).encode("utf-8")


def read_json(store: BlobStore, path: str) -> Any | None:
    blob = store.read(path)
    return None if blob is None else json.loads(blob.data)


def update_json(store: BlobStore, path: str, change: Callable[[dict], dict | None], *, create: bool = False,
                stamp: bool = False) -> dict:
    """Apply `change` to a JSON blob by ETag compare-and-swap, retried on conflict; returns the blob as stored.

    `change` gets a copy and returns the new value, or None to leave it as it is. A missing blob starts as `{}` when
    `create`, else raises LookupError. `stamp` sets "updated" on every write. Conflicts are retried after a jittered
    back-off that doubles up to `MAX_BACKOFF` seconds, `CAS_TRIES` times in all; then Contended is raised (the
    message is delivered again later, when the crowd has passed).
    """
    for attempt in range(CAS_TRIES):
        if attempt:
            pause(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
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
    raise Contended(f"{path}: still changed by others after {CAS_TRIES} tries")


class Contended(RuntimeError):
    """A compare-and-swap kept losing to other writers."""


def evaluation_files(store: BlobStore, paths: JobPaths) -> list[str]:
    """The names of the evaluation's files the job has so far (`evaluation.jsonl`, `report.*`)."""
    return [p.rsplit("/", 1)[1] for prefix in ("report.", "evaluation.") for p in store.list(paths.file(prefix))]


def copy_final_files(store: BlobStore, paths: JobPaths, out: Path) -> None:
    """The job's dataset, rejections and record (and its evaluation's files, once there are some) copied into a local
    folder."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (*FINAL_FILES, *evaluation_files(store, paths)):
        store.download_to(paths.file(name), out / name)
