"""Recording how a fine-tune ended: from AzureML run events, or from the fallback poller.

Events can repeat and arrive late or out of order; only the first terminal status of the job's own run counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from shared.finetune.run_events import interpret
from shared.jobs import JobPaths, JobState, Record, fail, now, read_json, update_record
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
    update_record(services.store, paths, lambda r: finished(r, run))
    return update.job_id


def finished(record: Record, run: RunState) -> Record | None:
    """The record with the run's final status, when it is this job's run and the job still waits for it."""
    finetune = record.get("finetune") or {}
    if record["state"] != JobState.FINE_TUNING or finetune.get("name") != run.name:
        return None
    if run.status not in TERMINAL_STATUSES:
        return None
    finetune.update(status=run.status, output_model=run.output_model, finished=now())
    if run.status != "Completed":
        return fail(record, f"fine-tune run {run.name} ended {run.status}" + (f": {run.error}" if run.error else ""))
    record["state"] = JobState.SUCCEEDED
    record["timings"]["finished"] = now()
    return record


def poll_unfinished(services: Services) -> list[str]:
    """Ask the fine-tuner about every job still in fine-tuning; returns the jobs that finished."""
    done = []
    for paths, record in jobs_in(services, JobState.FINE_TUNING):
        name = record["finetune"]["name"]
        if not record["finetune"].get("started"):
            continue
        run = services.finetuner.state(name)
        if run.status in TERMINAL_STATUSES:
            update_record(services.store, paths, lambda r, run=run: finished(r, run))
            done.append(paths.job)
    return done


def jobs_in(services: Services, state: JobState) -> Iterator[tuple[JobPaths, Record]]:
    container = services.settings.jobs_container
    for path in services.store.list(f"{container}/"):
        parts = path.split("/")
        if len(parts) == 3 and parts[2] == "status.json":
            paths = JobPaths(container, parts[1])
            record = read_json(services.store, paths.status)
            if record is not None and record["state"] == state:
                yield paths, record
