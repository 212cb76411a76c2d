"""Recording how a fine-tune ended: from AzureML's run events, or from the fallback poller.

Events can repeat and arrive late or out of order; only the first terminal status of the job's own run counts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from shared.finetune.run_events import interpret
from shared.jobs.blobs import now, read_json
from shared.jobs.paths import ACTIVE, JobPaths
from shared.jobs.record import JobState, read_record, unmark_if_over, update_record
from shared.manifest.load import stored_manifest
from shared.pipeline import events
from shared.pipeline.evaluate import request_evaluation, wants_evaluation
from shared.ports import TERMINAL_STATUSES, BlobStore, RunState
from shared.services import Services

log = logging.getLogger(__name__)

STALE_MARKER_SECONDS = 3600.0  # a marker with no record this old belongs to a job that was removed


def on_run_event(services: Services, event: Mapping[str, Any]) -> str | None:
    """Handle one Event Grid event; returns the job id it updated, if any."""
    update = interpret(event, workspace_topic=services.settings.workspace_topic)
    if update is None:
        return None
    paths = JobPaths(services.settings.jobs_container, update.job_id)
    if services.store.read(paths.status) is None:
        log.info("run %s names job %s, which does not exist here", update.run_id, update.job_id)
        return None
    output_model = update.output_model
    if update.status == "Completed" and output_model is None:  # events never name the registered model
        output_model = services.finetuner.state(update.run_id).output_model
    run = RunState(update.run_id, update.status, output_model, update.error)
    record = update_record(services.store, paths, lambda r: r.run_ended(run, evaluate=evaluates(services, paths)))
    request_evaluation(services, record)  # a repeated event sends it again, which the queue drops
    events.flush(services, update.job_id)
    return update.job_id


def poll_unfinished(services: Services) -> list[str]:
    """For every job still marked active: ask the fine-tuner how a started fine-tune stands, send a job's evaluation
    message again (the queue drops it unless a crash lost it), publish events a crash left unsent, and unmark a job
    that is over; returns the jobs whose fine-tune finished. Only marked jobs are read,
    so the cost follows the jobs in flight, not the history."""
    store, container = services.store, services.settings.jobs_container
    done = []
    for marker in list(store.list(f"{container}/{ACTIVE}/")):
        paths = JobPaths(container, marker.rsplit("/", 1)[1])
        record = read_record(store, paths)
        if record is None:
            unmark_if_stale(store, marker)
            continue
        ft = record.finetune
        if record.state is JobState.FINE_TUNING and ft is not None and ft.started:
            run = services.finetuner.state(ft.name)
            if run.status in TERMINAL_STATUSES:
                evaluate = evaluates(services, paths)
                record = update_record(store, paths, lambda r, run=run, evaluate=evaluate: r.run_ended(
                    run, evaluate=evaluate))
                done.append(paths.job)
        request_evaluation(services, record)  # again for a job evaluating: a message lost in a crash is sent
        if record.outbox:
            events.flush(services, paths.job)
            record = read_record(store, paths)
        unmark_if_over(store, paths, record)
    return done


def evaluates(services: Services, paths: JobPaths) -> bool:
    """Whether the job's manifest asks for the evaluation once its fine-tune has trained a model."""
    return wants_evaluation(stored_manifest(services.store, paths))


def unmark_if_stale(store: BlobStore, marker: str) -> None:
    """A marker without a record: a job about to be created (kept), or one removed long ago (unmarked)."""
    doc = read_json(store, marker) or {}
    if now() - float(doc.get("created", 0)) > STALE_MARKER_SECONDS:
        store.delete(marker)
