"""The teacher's pace shared by the function instances that label one job (`jobs/<job>/pace.json`).

In one process every worker of a job shares one rate limiter (shared.teacher.ratelimit.LIMITERS). In Azure several
instances may label shards of the same job at once, each with its own limiter. Each instance keeps the pace it has
learned in the job's pace blob, `{"instances": {id: {"per_minute", "source", "seen"}}}`, written by compare-and-swap
at most every SHARE_SECONDS seconds. An instance that starts on a job whose pace nothing states takes its share of
what the others have learned, their sum divided among them and itself, instead of starting slowly; from then on
each instance's own 429s keep it at its share, as flows that each back off on loss share a link.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from shared.jobs.blobs import read_json, update_json
from shared.jobs.paths import JobPaths
from shared.ports import BlobStore
from shared.teacher.ratelimit import RateLimiter

SHARE_SECONDS = 5.0  # an instance writes its pace at most this often
ACTIVE_SECONDS = 60.0  # an instance not heard from for this long no longer counts


def instance_id() -> str:
    """This process: the Functions host's instance (WEBSITE_INSTANCE_ID) and process id, else host and process id."""
    return f"{os.environ.get('WEBSITE_INSTANCE_ID') or socket.gethostname()}-{os.getpid()}"


def active(doc: dict[str, Any] | None, now: float, me: str) -> dict[str, dict[str, Any]]:
    """The other instances heard from within ACTIVE_SECONDS."""
    return {name: entry for name, entry in ((doc or {}).get("instances") or {}).items()
            if name != me and now - float(entry.get("seen", 0)) < ACTIVE_SECONDS}


def start_from_shared(limiter: RateLimiter, store: BlobStore, paths: JobPaths) -> float | None:
    """Give a limiter still in slow start its share of the pace the job's other instances learned; the pace taken."""
    others = [e for e in active(read_json(store, paths.pace), time.time(), instance_id()).values()
              if e.get("source") == "learned"]
    if not others:
        return None
    share = sum(float(e["per_minute"]) for e in others) / (len(others) + 1)
    return share if limiter.adopt(share) else None


class PaceSharer:
    """Writes this instance's pace into the job's pace blob, at most every SHARE_SECONDS seconds."""

    def __init__(self, store: BlobStore, paths: JobPaths) -> None:
        self._store, self._paths = store, paths
        self._written = float("-inf")

    @property
    def due(self) -> bool:
        """SHARE_SECONDS have passed since this instance last wrote its pace."""
        return time.monotonic() - self._written >= SHARE_SECONDS

    def share(self, limiter: RateLimiter, *, force: bool = False) -> None:
        pace = limiter.pace()
        if pace is None or not (force or self.due):
            return
        self._written = time.monotonic()
        me, per_minute, source = instance_id(), round(pace[0], 1), pace[1]

        def put(doc: dict[str, Any]) -> dict[str, Any]:
            now = time.time()
            return {**doc, "instances": {**active(doc, now, me),
                                         me: {"per_minute": per_minute, "source": source, "seen": round(now, 1)}}}

        update_json(self._store, self._paths.pace, put, create=True)
