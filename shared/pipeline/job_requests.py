"""Job requests: messages on the `jobs` queue start, cancel and resume jobs, as uploads and `distill cancel` do.

A message body is one JSON object, `{"version": 1, "action": ...}`:

    {"version": 1, "action": "start", "manifest": {...}, "job": "optional-id"}
    {"version": 1, "action": "start", "manifest_blob": "input/<job>/manifest.json"}
    {"version": 1, "action": "cancel", "job": "<job>"}
    {"version": 1, "action": "resume", "job": "<job>", "budget_tokens": 200000}

An inline manifest has the schema of a manifest file, its data files named as blob paths in the input container
(`input/<folder>/<file>`). The job's id is `job`, else the manifest's `name`, else derived from what determines its
results, exactly as `distill run` derives it; its data and manifest are copied to `input/<job>/`, and the job is
ingested from there as an upload would be. `manifest_blob` names an uploaded manifest: the job is the one its upload
starts. Both are idempotent: a repeated start finds the job ingested and changes nothing.

A request that cannot be honoured (not JSON, an unknown version or action, an invalid manifest, no such job) is
refused with a reason: recorded in `jobs/_requests/<message>.json`, and a refused start of a job that does not exist yet
records that job `failed` with the reason; the message is not delivered again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from shared.identity import file_digest, job_id
from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JOB_ID_RULE, JobPaths, is_job_id
from shared.jobs.record import create_record, new_record, read_record, update_record
from shared.manifest.load import manifest_from_dict, stored_manifest
from shared.manifest.model import Manifest, ManifestError
from shared.pipeline import events
from shared.pipeline.cancel import request_cancel
from shared.pipeline.ingest import ingest, job_of, resume_budget
from shared.ports import BlobStore
from shared.services import Services

log = logging.getLogger(__name__)

VERSION = 1
ACTIONS = ("start", "cancel", "resume")
REQUESTS = "_requests"  # in the jobs container: what was refused, by message


class Refused(Exception):
    """A request that cannot be honoured: `reason` is a short code, `description` says what to change."""

    def __init__(self, reason: str, description: str, job: str | None = None) -> None:
        super().__init__(f"{reason}: {description}")
        self.reason, self.description, self.job = reason, description, job


def on_job_request(services: Services, body: bytes, message_id: str) -> Refused | None:
    """Handle one `jobs` message; the refusal (also recorded) when it cannot be honoured."""
    try:
        request = parse(body)
        handle(services, request)
    except Refused as refused:
        record_refusal(services, message_id, refused)
        return refused
    return None


def parse(body: bytes) -> dict[str, Any]:
    """The request object; Refused when the body is not one."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused("not-json", f"the message body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise Refused("not-json", "the message body must be a JSON object")
    if request.get("version") != VERSION:
        raise Refused("unknown-version", f"version must be {VERSION}, the only version there is")
    if request.get("action") not in ACTIONS:
        raise Refused("unknown-action", f"action must be one of {', '.join(ACTIONS)}")
    job = request.get("job")
    if job is not None and (not isinstance(job, str) or not is_job_id(job)):
        raise Refused("invalid-job", f"job: {JOB_ID_RULE}")
    return request


def handle(services: Services, request: dict[str, Any]) -> None:
    action, job = request["action"], request.get("job")
    if action == "start":
        started = start(services, request)
        log.info("job %s: started by a queue message", started)
        return
    if job is None:
        raise Refused("invalid-job", f"{action} needs the job's id in `job`")
    paths = JobPaths(services.settings.jobs_container, job)
    if read_record(services.store, paths) is None:
        raise Refused("no-such-job", f"there is no job {job}", job)
    if action == "cancel":
        outcome = request_cancel(services.store, paths)
        if outcome.refused:
            raise Refused("cannot-cancel", outcome.refused, job)
        return
    resume(services, paths, request.get("budget_tokens"))


def start(services: Services, request: dict[str, Any]) -> str:
    """Start (or find started) the job of a start request; its id."""
    named = request.get("job")
    if blob := request.get("manifest_blob"):
        job = job_of(str(blob), services.settings.input_container)
        if job is None or (named and named != job):
            raise Refused("invalid-manifest", f"manifest_blob must be {services.settings.input_container}/"
                          "<job>/manifest.json (or .yaml, .yml)" + (f" with <job> {named}" if named else ""), named)
        if services.store.read(str(blob)) is None:
            raise Refused("invalid-manifest", f"manifest_blob: there is no blob {blob}", job)
        return ingest(services, str(blob)) or job
    doc = request.get("manifest")
    if not isinstance(doc, dict):
        raise Refused("invalid-manifest", "a start needs `manifest` (the manifest itself) or `manifest_blob`", named)
    manifest = inline_manifest(doc, named)
    with tempfile.TemporaryDirectory(prefix="distill-request-") as tmp:
        local = fetch_data(services.store, services.settings.input_container, manifest, Path(tmp), named)
        job = named or job_id(manifest, [file_digest(path) for path in local.values()])
        folder = f"{services.settings.input_container}/{job}"
        paths = JobPaths(services.settings.jobs_container, job)
        if read_record(services.store, paths) is None:  # not started yet (a repeated start copies nothing again)
            names = {split: path.name for split, path in local.items()}
            if len(set(names.values())) < len(names):
                names = {split: f"{split}.jsonl" for split in names}
            for split, path in local.items():
                services.store.upload_from(f"{folder}/{names[split]}", path)
            native = manifest.model_dump(mode="json") | {split_field(split): name for split, name in names.items()}
            services.store.write(f"{folder}/manifest.json", dumps(native))
    return ingest(services, f"{folder}/manifest.json") or job


def inline_manifest(doc: dict[str, Any], job: str | None) -> Manifest:
    """The manifest of a start request, its data paths kept as the blob paths they name."""
    try:
        manifest = manifest_from_dict(doc, Path("/"), source="manifest")
    except ManifestError as exc:
        raise Refused("invalid-manifest", "; ".join(exc.problems), job or _name(doc)) from None
    return manifest.model_copy(update={field: str(getattr(manifest, field)).lstrip("/")
                                       for field in ("training_file", "validation_file")
                                       if getattr(manifest, field) is not None})


def fetch_data(store: BlobStore, container: str, manifest: Manifest, tmp: Path, job: str | None
               ) -> dict[str, Path]:
    """The request's data files, downloaded (to hash and to copy); Refused when one is not in the input container."""
    local = {}
    for split, blob in manifest.files.items():
        path = PurePosixPath(str(blob))
        if path.parts[:1] != (container,) or len(path.parts) < 2:
            raise Refused("invalid-manifest", f"{split_field(split)}: {blob} is not a blob in the {container} "
                          f"container (write it as {container}/<folder>/<file>)", job)
        local[split] = tmp / split / path.name  # kept under its name in input/<job>/ (by split when names clash)
        local[split].parent.mkdir()
        if not store.download_to(str(path), local[split]):
            raise Refused("invalid-manifest", f"{split_field(split)}: there is no blob {blob}", job)
    return local


def resume(services: Services, paths: JobPaths, budget: Any) -> None:
    """A `budget spent` job labels on under a higher budget (as a rerun with a higher --budget-tokens does)."""
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise Refused("invalid-budget", "resume needs `budget_tokens`, a whole number of tokens above 0", paths.job)
    stored = stored_manifest(services.store, paths)
    raised = stored.model_copy(update={"limits": stored.limits.model_copy(update={"budget_tokens": budget})})
    if not resume_budget(services, paths, raised):
        record = read_record(services.store, paths)
        raise Refused("cannot-resume", f"the job is {record.state if record else 'gone'}; only a job in `budget spent` "
                      "resumes, under a budget above what it has used", paths.job)
    events.flush(services, paths.job)


def record_refusal(services: Services, message_id: str, refused: Refused) -> None:
    """Keep why a request was refused; a refused start of a named job that does not exist yet fails that job."""
    log.warning("job request %s refused (%s): %s", message_id, refused.reason, refused.description)
    doc = {"message_id": message_id, "reason": refused.reason, "description": refused.description,
           "job": refused.job}
    services.store.write(refusal_path(services, message_id), dumps(doc))
    if refused.job and refused.reason == "invalid-manifest" and is_job_id(refused.job):
        paths = JobPaths(services.settings.jobs_container, refused.job)
        if create_record(services.store, paths, new_record(refused.job)):  # a job that exists is not another's to fail
            update_record(services.store, paths, lambda r: r.fail(f"refused request: {refused.description}"))
            events.flush(services, refused.job)


def refusal(services: Services, message_id: str) -> dict[str, Any] | None:
    """Why the request in this message was refused, if it was."""
    return read_json(services.store, refusal_path(services, message_id))


def refusal_path(services: Services, message_id: str) -> str:
    key = hashlib.sha256(message_id.encode()).hexdigest()[:32]
    return f"{services.settings.jobs_container}/{REQUESTS}/{key}.json"


def split_field(split: str) -> str:
    return "training_file" if split == "train" else "validation_file"


def _name(doc: dict[str, Any]) -> str | None:
    name = doc.get("name")
    return name if isinstance(name, str) and is_job_id(name) else None
