"""ExportOnlyFineTuner: the local stand-in for a fine-tune until local training lands.

Export only: no training ran. It copies the assembled train/validation files to `jobs/<job>/export/`, records
the run in `jobs/<job>/export/run.json`, and publishes the Event Grid event an AzureML workspace would send when a
run ends, so the local pipeline finishes a job through the same `run_events` path as Azure. Its runs never have
an output model.

Blobs written:

    jobs/<job>/export/train.jsonl, validation.jsonl   the copies
    jobs/<job>/export/run.json                        the run record
    jobs/_export_runs/<run name>.json                 {"job_id": ...}: finds the record from a run name
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.finetune.run_events import run_event
from shared.jobs.blobs import dumps
from shared.local.runs import RunBook, check_run_name
from shared.ports import BlobStore, Conflict, FineTuneRequest, RunState
from shared.settings import Settings

DESCRIPTION = "export only: no training ran"
RUN_TYPE = "distill.export_only"

Publish = Callable[[dict[str, Any]], None]


class ExportOnlyFineTuner:
    """A FineTuner that exports the training files and trains nothing (export only: no training ran)."""

    def __init__(self, store: BlobStore, publish: Publish, workspace_topic: str) -> None:
        self._store = store
        self._publish = publish
        self._topic = workspace_topic
        self._runs = RunBook(store, Settings().jobs_container, "export", "_export_runs")

    def start(self, request: FineTuneRequest) -> str:
        """Export once per run name and publish the run's final status; a repeated start does nothing (a start
        after `distill run --restart`, whose job folder is new, exports again).

        A missing train or validation blob ends the run Failed (recorded and published); a store error raises.
        If the process stops between recording and publishing, `state()` still reports the final status.
        """
        check_run_name(request.name, "run name")
        check_run_name(request.job_id, "job id")
        if self._runs.load(request.name) is not None:
            return request.name
        self._store.delete(self._runs.index_path(request.name))  # left by a run of a job since started over
        error = self._export(request)
        status = "Failed" if error else "Completed"
        self._store.write(self._runs.record_path(request.job_id), dumps(self._record(request, status, error)))
        try:
            self._store.write(self._runs.index_path(request.name), dumps({"job_id": request.job_id}), if_absent=True)
        except Conflict:
            return request.name  # another start of the same run won the race and publishes
        self._publish(run_event(request, status=status, error=error, workspace_topic=self._topic, run_type=RUN_TYPE))
        return request.name

    def state(self, name: str) -> RunState:
        """The recorded run; raises LookupError when no run of that name was started."""
        run = self._runs.load(name)
        if run is None:
            raise LookupError(f"no export-only run named {name}")
        return RunState(name=name, status=run["status"], output_model=None, error=run["error"])

    def _export(self, request: FineTuneRequest) -> str | None:
        """Copy both files into the export folder; the reason for failing, or None."""
        with tempfile.TemporaryDirectory(prefix="distill-export-") as tmp:
            for source, target in self._copies(request):
                local = Path(tmp) / target.rsplit("/", 1)[-1]
                if not self._store.download_to(source, local):
                    return f"missing blob: {source}"
                self._store.upload_from(target, local)
        return None

    def _copies(self, request: FineTuneRequest) -> list[tuple[str, str]]:
        export = self._runs.folder(request.job_id)
        return [(request.train_path, f"{export}/train.jsonl"),
                (request.validation_path, f"{export}/validation.jsonl")]

    def _record(self, request: FineTuneRequest, status: str, error: str | None) -> dict[str, Any]:
        return {
            "name": request.name,
            "job_id": request.job_id,
            "description": DESCRIPTION,
            "status": status,
            "error": error,
            "output_model": None,
            "experiment_name": request.experiment_name,
            "student_model": request.student_model,
            "files": dict(self._copies(request)),
            "tags": dict(request.tags),
            "created_at": datetime.now(UTC).isoformat(),
        }
