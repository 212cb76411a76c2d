"""A job's record for the status endpoint."""

from __future__ import annotations

import json

from shared.jobs.paths import JobPaths, is_job_id
from shared.services import Services


def job_status(services: Services, job: str) -> tuple[int, str]:
    """(HTTP status, JSON body) for a job id."""
    if not is_job_id(job):
        return 400, json.dumps({"error": "not a job id"})
    blob = services.store.read(JobPaths(services.settings.jobs_container, job).status)
    if blob is None:
        return 404, json.dumps({"error": f"no job {job}"})
    return 200, blob.data.decode("utf-8")
