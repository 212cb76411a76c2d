"""Dead letters: a shard or completion message that failed every delivery fails its job, with the reason, and stops
the teacher calls of its other shards; an evaluation message that did ends the job's evaluation with the reason (the
fine-tuned model is kept)."""

from __future__ import annotations

import logging

from shared.jobs.blobs import now
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobState, read_record, update_record
from shared.manifest.load import stored_manifest
from shared.pipeline import events
from shared.pipeline.cancel import stop_teacher_calls
from shared.pipeline.evaluate import end_with_error
from shared.queueing import BadMessage, TriggerMessage, decode_body
from shared.services import Services

log = logging.getLogger(__name__)


def on_dead_letter(services: Services, queue: str, message: TriggerMessage, reason: str | None,
                   description: str | None, deliveries: int | None) -> str | None:
    """Mark the message's job failed (a final job stays as it is); returns the job id.

    A dead letter whose body cannot be read is logged and completed: nothing can dead-letter it further, so raising
    would deliver it again for ever."""
    try:
        body = decode_body(message)
    except BadMessage as exc:
        log.error("dead letter on %s cannot be read (%s); completed without a job to fail", queue, exc)
        return None
    job = body.get("job")
    if not isinstance(job, str):
        log.warning("dead letter on %s names no job; left in the dead-letter queue", queue)
        return None
    paths = JobPaths(services.settings.jobs_container, job)
    if services.store.read(paths.status) is None:
        return None
    tries = f" after {deliveries} deliveries" if deliveries else ""
    cause = ": ".join(part for part in (reason, description) if part) or "no reason given"
    if queue == services.settings.evaluation_queue:
        record = read_record(services.store, paths)
        if record is not None and record.state is JobState.EVALUATING:
            manifest = stored_manifest(services.store, paths)
            end_with_error(services, paths, manifest, f"the evaluation message was dead-lettered{tries} ({cause})")
        return job
    shard = f"shard {body.get('shard')}"
    what = shard if queue == services.settings.shard_queue else f"the completion of {shard}"
    record = update_record(services.store, paths, lambda r: r.fail(f"{what} was dead-lettered{tries} ({cause})"))
    if record.state is JobState.FAILED and services.store.read(paths.cancel_flag) is None:
        # workers still labelling the job's other shards send no more of its rows (their results would be ignored)
        stop_teacher_calls(services.store, paths, {"failed": now()})
    events.flush(services, job)
    return job
