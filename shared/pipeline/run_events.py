"""Recording how a fine-tune ended: from AzureML's run events, or from the fallback poller.

Events can repeat and arrive late or out of order; only the first terminal status of the job's own run counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from shared.finetune.run_events import interpret
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobRecord, JobState, read_record, update_record
from shared.pipeline import events
from shared.ports import TERMINAL_STATUSES, RunState
from shared.services import Services

log = logging.getLogger(__name__)


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
    update_record(services.store, paths, lambda r: r.run_ended(run))
    events.flush(services, update.job_id)
    return update.job_id


def poll_unfinished(services: Services) -> list[str]:
    """Ask the fine-tuner about every job still in fine-tuning, and publish any job's events a crash left unsent;
    returns the jobs that finished."""
    done = []
    for paths, record in all_jobs(services):
        ft = record.finetune
        if record.state is JobState.FINE_TUNING and ft is not None and ft.started:
            run = services.finetuner.state(ft.name)
            if run.status in TERMINAL_STATUSES:
                record = update_record(services.store, paths, lambda r, run=run: r.run_ended(run))
                done.append(paths.job)
        if record.outbox:
            events.flush(services, paths.job)
    return done


def all_jobs(services: Services) -> Iterator[tuple[JobPaths, JobRecord]]:
    container = services.settings.jobs_container
    for path in services.store.list(f"{container}/"):
        parts = path.split("/")
        if len(parts) == 3 and parts[2] == "status.json":
            paths = JobPaths(container, parts[1])
            if (record := read_record(services.store, paths)) is not None:
                yield paths, record
