"""Where the local fine-tuners keep their runs: a run record in the job's folder (`jobs/<job>/<folder>/run.json`) and
an index from run name to job (`jobs/_<kind>_runs/<name>.json`: `_` never starts a job id, so the index folder is
never taken for a job)."""

from __future__ import annotations

import json
import re
from typing import Any

from shared.jobs.paths import JobPaths
from shared.ports import BlobStore

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


def check_run_name(value: str, what: str) -> None:
    """Names become blob path segments: no `/`, no `..`, nothing empty."""
    if not _SAFE_NAME.match(value) or ".." in value:
        raise ValueError(f"{what} must be letters, digits, `-`, `_` or `.`")


class RunBook:
    """The run records of one local fine-tuner, in the jobs container."""

    def __init__(self, store: BlobStore, jobs_container: str, folder: str, index: str) -> None:
        self.store, self._container, self._folder, self._index = store, jobs_container, folder, index

    def folder(self, job_id: str) -> str:
        """The run's folder in its job's folder."""
        return JobPaths(self._container, job_id).file(self._folder)

    def record_path(self, job_id: str) -> str:
        return f"{self.folder(job_id)}/run.json"

    def index_path(self, name: str) -> str:
        return f"{self._container}/{self._index}/{name}.json"

    def load(self, name: str) -> dict[str, Any] | None:
        """The record of the run of that name, if one was started."""
        check_run_name(name, "run name")
        index = self.store.read(self.index_path(name))
        record = self.store.read(self.record_path(json.loads(index.data)["job_id"])) if index else None
        run = json.loads(record.data) if record else None
        return run if run and run["name"] == name else None
