"""`distill send MESSAGE.json`: one job request (shared.pipeline.job_requests) handed to the embedded `jobs` queue,
and the local pipeline run until its job ends, with the progress bar, output and exit codes of `distill run`.

In a start request's inline manifest, a data file may be a local file (a path relative to the message's folder, or
absolute) instead of a blob path: it is copied into the local input container first, as the deployed app would find
an uploaded one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from shared.identity import file_digest, job_id
from shared.jobs.blobs import read_json
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobState
from shared.local.run import LocalJob, home, is_running, open_store, run_request, steer_running
from shared.manifest.model import Manifest
from shared.pipeline.ingest import job_of, load_job_manifest
from shared.pipeline.job_requests import Refused, fetch_data, inline_manifest, parse
from shared.ports import BlobStore
from shared.settings import Settings

DATA_FIELDS = ("training_file", "validation_file")


def send(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if str(args.message) == "-" else args.message.read_text(encoding="utf-8")
    base = Path.cwd() if str(args.message) == "-" else args.message.resolve().parent
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{args.message}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    try:
        body = parse(text.encode("utf-8"))
        settings, store = Settings(), open_store(home())  # only for a request that may be honoured
        if body["action"] == "start" and isinstance(body.get("manifest"), dict):
            body["manifest"] = with_local_files_uploaded(body["manifest"], base, store, settings.input_container)
        if body["action"] != "start" and body.get("job") and is_running(str(body["job"])):
            return steer(body, str(body["job"]))
        with tempfile.TemporaryDirectory(dir=scratch()) as tmp:
            job, manifest, files = what_it_runs(body, store, settings, Path(tmp))
            outcome = run_request(body, LocalJob(job, manifest, files, (), workers=args.workers,
                                                 export_only=args.export_only, out=args.out))
    except Refused as refused:
        print(f"distill send: the request is refused ({refused.reason}): {refused.description}", file=sys.stderr)
        return 2
    from shared.cli.run import report_outcome

    goal = JobState.CANCELLED if body["action"] == "cancel" else \
        JobState.SUCCEEDED if manifest.finetune else JobState.DATASET_READY
    return report_outcome(outcome, job, goal, "distill send")


def steer(body: dict[str, Any], job: str) -> int:
    """A cancel or resume for a job that another process is running: handled here, that run carries on with it."""
    steer_running(body, job)
    print(f"job {job}: {body['action']} handed over; the `distill run` running the job carries it out")
    return 0


def with_local_files_uploaded(doc: dict[str, Any], base: Path, store: BlobStore, container: str) -> dict[str, Any]:
    """The inline manifest with each data file that is a local file copied into the input container and named by
    its blob path there."""
    doc = dict(doc)
    for field in DATA_FIELDS:
        value = doc.get(field)
        if not isinstance(value, str) or value.startswith(f"{container}/"):
            continue
        local = (base / value).expanduser()
        if local.is_file():
            folder = hashlib.sha256(str(local.resolve()).encode()).hexdigest()[:16]
            doc[field] = f"{container}/_sent/{folder}/{local.name}"
            store.upload_from(doc[field], local)
    return doc


def what_it_runs(body: dict[str, Any], store: BlobStore, settings: Settings, tmp: Path
                 ) -> tuple[str, Manifest, dict[str, Path]]:
    """The request's job id, its manifest and its data files here (the test teacher reads its answers there)."""
    named = body.get("job")
    if body["action"] == "start" and isinstance(body.get("manifest"), dict):
        manifest = inline_manifest(body["manifest"], named)
        local = fetch_data(store, settings.input_container, manifest, tmp, named)
        return named or job_id(manifest, [file_digest(p) for p in local.values()]), manifest, local
    if body["action"] == "start":
        blob = str(body.get("manifest_blob") or "")
        job = job_of(blob, settings.input_container)
        manifest_blob = store.read(blob) if job else None
        if manifest_blob is None:
            raise Refused("invalid-manifest", f"manifest_blob: there is no manifest {blob!r} in the local storage")
        manifest = load_job_manifest(manifest_blob.data, blob)
    else:
        job = str(named or "")
        stored = read_json(store, JobPaths(settings.jobs_container, job).manifest) if job else None
        if stored is None:
            raise Refused("no-such-job", f"there is no local job {job!r}")
        manifest = Manifest.model_validate(stored)
    return job, manifest, fetch_data(store, settings.input_container, manifest, tmp, job)


def scratch() -> Path:
    folder = home() / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
