"""Ingest: a manifest landed in the input container; validate the job and fan its rows out as shards.

A job starts when `input/<job>/manifest.(json|yaml|yml)` lands (data first, manifest last); `<job>` is its id.
Every step is safe to repeat: a repeated BlobCreated event finds the job record past `ingesting` and does
nothing, and an ingest cut short is redone from the start (same shards, same message ids, which the queue's
duplicate detection drops).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from shared import tracing
from shared.assembly import held_out
from shared.joblog import fields
from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JOB_ID_RULE, SPLITS, JobPaths, is_job_id
from shared.jobs.record import JobRecord, JobState, create_record, new_record, read_record, update_record
from shared.jobs.shards import shard_line
from shared.manifest.load import is_data_asset, manifest_from_text
from shared.manifest.model import Manifest, ManifestError
from shared.pipeline import budget, events, interrupt
from shared.pipeline.messages import shard_message
from shared.ports import BlobStore
from shared.rows import Row
from shared.services import Services
from shared.validation import FileLimits, FileReport, finish_report, read_rows

log = logging.getLogger(__name__)

MANIFEST_NAMES = ("manifest.json", "manifest.yaml", "manifest.yml")


def job_of(blob_path: str, input_container: str) -> str | None:
    """The job id of a manifest blob `input/<job>/manifest.*`; None for any other blob."""
    parts = blob_path.strip("/").split("/")
    if len(parts) != 3 or parts[0] != input_container or parts[2] not in MANIFEST_NAMES:
        return None
    if not is_job_id(parts[1]):
        log.warning("ignored a manifest at %r: %s", blob_path, JOB_ID_RULE)
        return None
    return parts[1]


def ingest(services: Services, blob_path: str) -> str | None:
    """Handle one BlobCreated event; returns the job id when the blob is a manifest.

    The job's trace starts here (its id is kept in the record, so a repeated event continues the same trace).
    """
    settings, store = services.settings, services.store
    job = job_of(blob_path, settings.input_container)
    if job is None:
        return None
    paths = JobPaths(settings.jobs_container, job)
    record = read_record(store, paths)
    with tracing.span(trace_id=record.trace_id if record else None) as trace:
        log.info("job %s: ingesting %s", job, blob_path, extra=fields(job))
        ingest_job(services, paths, record, blob_path, trace.trace_id)
    events.flush(services, job)
    return job


def ingest_job(services: Services, paths: JobPaths, record: JobRecord | None, blob_path: str, trace_id: str) -> str:
    store, job = services.store, paths.job
    if record is not None and record.state is JobState.LABELING:  # cut short after the plan: send again
        if record.round:  # in a round resumed with a higher budget
            send_shards(services, job, record.unfinished_shards(), record.round)
        else:
            send_shards(services, job, range(read_json(store, paths.plan)["shards"]))
        return job
    if record is not None and record.state is JobState.BUDGET_SPENT:  # run again, perhaps with a higher budget
        try:
            resume_budget(services, paths, manifest_of(store, blob_path))
        except ManifestError as exc:
            log.warning("job %s: the manifest uploaded again is invalid (%s); the job stays %s", job,
                        exc.problems[0], record.state)
        return job
    if record is not None and record.state is not JobState.INGESTING:
        log.info("job %s: manifest event repeated; the job is already %s", job, record.state)
        return job
    if record is None:
        create_record(store, paths, new_record(job, trace_id=trace_id))
    manifest_blob = store.read(blob_path)
    if manifest_blob is None:
        raise FileNotFoundError(f"{blob_path} vanished before it could be read")
    try:
        manifest = load_job_manifest(manifest_blob.data, blob_path)
    except ManifestError as exc:
        problems = exc.problems
        store.write(paths.validation_report, dumps({"manifest": problems}))
        update_record(store, paths, lambda r: r.fail(f"invalid manifest: {problems[0]}"))
        return job
    store.write(paths.manifest, dumps(manifest.model_dump(mode="json")))
    with tempfile.TemporaryDirectory(prefix="distill-ingest-") as tmp:
        plan, reports = write_shards(services, paths, manifest, Path(tmp))
    store.write(paths.validation_report, dumps({"files": [report_json(r) for r in reports]}))
    errors = sum(r.errors for r in reports)
    if errors:
        first = next(str(p) for r in reports for p in r.problems if p.severity == "error")
        update_record(store, paths, lambda r: r.fail(f"validation found {errors} errors, first: {first}"))
        return job
    if problem := teacher_problem(services, manifest):
        update_record(store, paths, lambda r: r.fail(f"teacher: {problem}"))
        return job
    store.write(paths.plan, dumps(plan))
    rows = {**plan["rows"], "per_shard": plan["shard_rows"]}  # (the last shard may hold fewer)
    update_record(store, paths, lambda r: r.plan(plan["task"], plan["shards"], rows, trace_id))
    send_shards(services, job, range(plan["shards"]))
    return job


def resume_budget(services: Services, paths: JobPaths, manifest: Manifest) -> bool:
    """A `budget spent` job back to labelling under this manifest's budget: the shards with rows to label are sent
    again, as a new round. False when that budget is spent already or the job is not waiting for one."""
    resumed = budget.resume(services.store, paths, manifest)
    if resumed is not None:
        round_, shards = resumed
        send_shards(services, paths.job, shards, round_)
    return resumed is not None


def teacher_problem(services: Services, manifest: Manifest) -> str | None:
    """Why the job's teacher cannot answer (unreachable, no key, credentials refused), checked once before fan-out."""
    from shared.teacher.preflight import teacher_problem as problem  # openai: only when a job is ingested

    return interrupt.run(problem(manifest.teacher, manifest.inference, environ=services.environ,
                               local_url=services.local_teacher_url))


def send_shards(services: Services, job: str, shards: Iterable[int], round_: int = 0) -> None:
    """One message per shard (shared.pipeline.messages: repeats are dropped by id)."""
    services.queue.send(services.settings.shard_queue, [shard_message("shard", job, i, round_) for i in shards])


def manifest_of(store: BlobStore, blob_path: str) -> Manifest:
    blob = store.read(blob_path)
    if blob is None:
        raise FileNotFoundError(f"{blob_path} vanished before it could be read")
    return load_job_manifest(blob.data, blob_path)


def load_job_manifest(data: bytes, blob_path: str) -> Manifest:
    """The manifest of a job, its data paths turned into blob paths inside the job's input folder."""
    folder = PurePosixPath("/", blob_path).parent
    text = data.decode("utf-8-sig", errors="replace")
    manifest = manifest_from_text(text, Path(folder), blob_path, is_json=blob_path.endswith(".json"))
    changes = {}
    for field in ("training_file", "validation_file"):
        value = getattr(manifest, field)
        if value is None:
            continue
        if is_data_asset(value):
            raise ManifestError([f"{blob_path}: {field}: AzureML data assets are not read by Distill; upload the "
                                 "file beside the manifest"])
        path = PurePosixPath(value)
        if path.parent != folder:
            raise ManifestError([f"{blob_path}: {field}: must name a file in the job's own folder {folder.name}/"])
        changes[field] = str(path).lstrip("/")
    return manifest.model_copy(update=changes)


def write_shards(services: Services, paths: JobPaths, manifest: Manifest, tmp: Path
                 ) -> tuple[dict, list[FileReport]]:
    """Stream every data file into shard blobs of `shard_rows` rows; returns the plan and the file reports."""
    store, size = services.store, services.settings.shard_rows
    reports: list[FileReport] = []
    counts = dict.fromkeys(SPLITS, 0)
    shards, batch = 0, []
    for split, row in split_rows(store, manifest, tmp, reports):
        counts[split] += 1
        batch.append(shard_line(split, row))
        if len(batch) == size:
            store.write(paths.shard(shards), ("\n".join(batch) + "\n").encode("utf-8"))
            shards, batch = shards + 1, []
    if batch:
        store.write(paths.shard(shards), ("\n".join(batch) + "\n").encode("utf-8"))
        shards += 1
    plan = {"task": manifest.task.value, "shards": shards, "shard_rows": size,
            "rows": {"total": sum(counts.values()), **counts}}
    return plan, reports


def split_rows(store, manifest: Manifest, tmp: Path, reports: list[FileReport]) -> Iterator[tuple[str, Row]]:
    """(split, row) for every valid row, in input order: the training file, then the validation file.

    Without a validation file, rows are held out by their id (shared.assembly.held_out).
    """
    limits = FileLimits(max_rows=manifest.limits.max_rows)
    for split, blob_path in manifest.files.items():
        local = tmp / f"{split}.jsonl"
        report = FileReport.empty(PurePosixPath(str(blob_path)).name, manifest.task)
        reports.append(report)
        if not store.download_to(str(blob_path), local):
            report.add(0, "missing-file", f"{blob_path} does not exist; upload the data before the manifest")
            continue
        for row in read_rows(local, manifest.task, report, limits=limits, name=report.file):
            if manifest.validation_file is None and held_out(row.id, manifest.validation_fraction):
                yield "validation", row
            else:
                yield split, row
        finish_report(report, manifest.effective_min_rows)


def report_json(report: FileReport) -> dict:
    return {"file": report.file, "rows": report.rows, "references": report.references, "errors": report.errors,
            "warnings": report.warnings, "duplicates": report.duplicates,
            "problems": [str(p) for p in report.problems], "problems_dropped": report.problems_dropped}
