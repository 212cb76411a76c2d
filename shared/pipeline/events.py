"""Publishing a job's events: its record's outbox (shared.jobs.events) goes to the job's `events.jsonl` and to the
event publisher, then leaves the outbox.

Every pipeline step flushes the jobs it changed before it returns, and the poll timer flushes what a crash left. A
redelivered step publishes what is still in the outbox again, under the same ids. A send that fails is tried again
by the next flush, `MAX_TRIES` times in all, then recorded in the job's status as missed; so is an event a subscriber
would not take (shared.ports.EventPublisher).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from shared.jobs.events import cloud_event
from shared.jobs.paths import JobPaths
from shared.jobs.record import read_record, update_record
from shared.ports import BlobStore, Conflict, PublishFailed
from shared.services import Services

log = logging.getLogger(__name__)

MAX_TRIES = 5


def flush(services: Services, job: str) -> int:
    """Publish the job's outbox; returns how many events left it (sent or missed)."""
    store, settings = services.store, services.settings
    paths = JobPaths(settings.jobs_container, job)
    record = read_record(store, paths)
    if record is None or not record.outbox:
        return 0
    pending = [cloud_event(entry, settings.event_source) for entry in record.outbox]
    keep(store, paths, pending)
    ids = {event["id"] for event in pending}
    try:
        missed = services.publisher.publish(pending)
    except PublishFailed as exc:
        error = str(exc)
        log.warning("job %s: %d events not published (%s); they are tried again", job, len(pending), error)
        after = update_record(store, paths, lambda r: r.publish_failed(ids, error, MAX_TRIES))
        return len(ids) - len(after.outbox or [])
    update_record(store, paths, lambda r: r.published(ids, missed))
    return len(ids)


def keep(store: BlobStore, paths: JobPaths, events: list[dict[str, Any]]) -> None:
    """Add the events to the job's `events.jsonl` (one CloudEvent per line), each id once."""
    while True:
        blob = store.read(paths.events)
        lines = blob.data.decode("utf-8").splitlines() if blob else []
        known = {json.loads(line)["id"] for line in lines}
        new = [json.dumps(event, ensure_ascii=False) for event in events if event["id"] not in known]
        if not new:
            return
        data = "".join(line + "\n" for line in (*lines, *new)).encode("utf-8")
        try:
            if blob is None:
                store.write(paths.events, data, if_absent=True)
            else:
                store.write(paths.events, data, if_match=blob.etag)
            return
        except Conflict:
            continue  # another handler added events first: read again
