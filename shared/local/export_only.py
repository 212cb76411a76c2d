"""ExportOnlyFineTuner: the local stand-in for a fine-tune until local training lands.

Export only: no training ran. It copies the assembled train/validation files to `jobs/<job>/export/`, records
the run in `jobs/<job>/export/run.json`, and publishes the Event Grid event an AzureML workspace would send when a
run ends, so the local pipeline finishes a job through the same `job_events` path as Azure. Its runs never have
an output model.

Blobs written:

    jobs/<job>/export/train.jsonl, validation.jsonl   the copies
    jobs/<job>/export/run.json                        the run record
    jobs/_export_runs/<run name>.json                 {"job_id": ...}: finds the record from a run name
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.finetune.run_events import ERROR_FIELD, JOB_TAG, RUN_STATUS_CHANGED
from shared.jobs.blobs import dumps
from shared.ports import BlobStore, Conflict, FineTuneRequest, RunState

DESCRIPTION = "export only: no training ran"
RUN_TYPE = "distill.export_only"
CONTAINER = "jobs"
INDEX = f"{CONTAINER}/_export_runs"  # `_` never starts a job id, so this folder is never taken for a job
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")

Publish = Callable[[dict[str, Any]], None]


class ExportOnlyFineTuner:
    """A FineTuner that exports the training files and trains nothing (export only: no training ran)."""

    def __init__(self, store: BlobStore, publish: Publish, workspace_topic: str) -> None:
        self._store = store
        self._publish = publish
        self._topic = workspace_topic

    def start(self, request: FineTuneRequest) -> str:
        """Export once per run name and publish the run's final status; a repeated start does nothing.

        A missing train or validation blob ends the run Failed (recorded and published); a store error raises.
        If the process stops between recording and publishing, `state()` still reports the final status.
        """
        check_run_name(request.name, "run name")
        check_run_name(request.job_id, "job id")
        if self._store.read(_index_path(request.name)) is not None:
            return request.name
        error = self._export(request)
        status = "Failed" if error else "Completed"
        self._store.write(_run_path(request.job_id), dumps(_record(request, status, error)))
        try:
            self._store.write(_index_path(request.name), dumps({"job_id": request.job_id}), if_absent=True)
        except Conflict:
            return request.name  # another start of the same run won the race and publishes
        self._publish(run_event(request, status=status, error=error, workspace_topic=self._topic))
        return request.name

    def state(self, name: str) -> RunState:
        """The recorded run; raises LookupError when no run of that name was started."""
        check_run_name(name, "run name")
        index = self._store.read(_index_path(name))
        record = self._store.read(_run_path(json.loads(index.data)["job_id"])) if index else None
        if record is None:
            raise LookupError(f"no export-only run named {name}")
        run = json.loads(record.data)
        return RunState(name=name, status=run["status"], output_model=None, error=run["error"])

    def _export(self, request: FineTuneRequest) -> str | None:
        """Copy both files into the export folder; the reason for failing, or None."""
        with tempfile.TemporaryDirectory(prefix="distill-export-") as tmp:
            for source, target in _copies(request):
                local = Path(tmp) / target.rsplit("/", 1)[-1]
                if not self._store.download_to(source, local):
                    return f"missing blob: {source}"
                self._store.upload_from(target, local)
        return None


def run_event(request: FineTuneRequest, *, status: str, error: str | None, workspace_topic: str,
              run_type: str = RUN_TYPE) -> dict[str, Any]:
    """The Event Grid event (Event Grid schema) an AzureML workspace sends when a run's status changes."""
    experiment_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"distill:experiment:{request.experiment_name}"))
    data: dict[str, Any] = {
        "experimentId": experiment_id,
        "experimentName": request.experiment_name,
        "runId": request.name,
        "runType": run_type,
        "runTags": {**request.tags, JOB_TAG: request.job_id},
        "runProperties": {},
        "runStatus": status,
    }
    if error:
        data[ERROR_FIELD] = error
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{workspace_topic}/runs/{request.name}/{status}")),
        "topic": workspace_topic,
        "subject": f"experiments/{experiment_id}/runs/{request.name}",
        "eventType": RUN_STATUS_CHANGED,
        "eventTime": datetime.now(UTC).isoformat(),
        "data": data,
        "dataVersion": "",  # as AzureML sends it
        "metadataVersion": "1",
    }


def _copies(request: FineTuneRequest) -> list[tuple[str, str]]:
    export = _export_dir(request.job_id)
    return [(request.train_path, f"{export}/train.jsonl"), (request.validation_path, f"{export}/validation.jsonl")]


def _record(request: FineTuneRequest, status: str, error: str | None) -> dict[str, Any]:
    return {
        "name": request.name,
        "job_id": request.job_id,
        "description": DESCRIPTION,
        "status": status,
        "error": error,
        "output_model": None,
        "experiment_name": request.experiment_name,
        "student_model": request.student_model,
        "files": dict(_copies(request)),
        "tags": dict(request.tags),
        "created_at": datetime.now(UTC).isoformat(),
    }


def _export_dir(job_id: str) -> str:
    return f"{CONTAINER}/{job_id}/export"


def _run_path(job_id: str) -> str:
    return f"{_export_dir(job_id)}/run.json"


def _index_path(name: str) -> str:
    return f"{INDEX}/{name}.json"


def check_run_name(value: str, what: str) -> None:
    """Names become blob path segments: no `/`, no `..`, nothing empty."""
    if not _SAFE_NAME.match(value) or ".." in value:
        raise ValueError(f"{what} must be letters, digits, `-`, `_` or `.`")


