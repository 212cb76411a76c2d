"""One job end to end on this machine, through the same functions Azure runs (`distill run`).

The job's data and manifest are uploaded to the local storage folder (data first, manifest last), the BlobCreated
event is delivered to the ingest function, and the runtime drives the queues until the job reaches its goal.
Running the same job again continues it; `restart` discards it first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.identity import fingerprint
from shared.jobs.blobs import copy_final_files, dumps, read_json
from shared.jobs.paths import FILE_NAME_CHARS, JobPaths, fitted
from shared.jobs.record import JobRecord, JobState, read_record, unmark_if_over
from shared.manifest.model import MAX_CONCURRENCY, Manifest, TeacherKind
from shared.pipeline import events
from shared.pipeline.aggregate import finetune_dataset_ready
from shared.pipeline.evaluate import request_evaluation
from shared.pipeline.job_requests import Refused, refusal
from shared.pipeline.messages import job_request
from shared.ports import BlobStore
from shared.settings import Settings
from shared.storage.local import LocalBlobStore

if TYPE_CHECKING:
    from shared.local.runtime import LocalRuntime

TEST_TEACHER = "distill-test-teacher"
FINGERPRINT = "fingerprint.json"  # beside a job's input: what its results depend on (shared.identity.fingerprint)
FIXABLE = frozenset({"teacher.url"})  # may change when a job is continued
STORAGE_CONNECTION = "DISTILL_STORAGE_CONNECTION_STRING"
LOCAL_TEACHER_TIMEOUT = 1800.0


def home() -> Path:
    """Where local jobs live: $DISTILL_HOME, else `.distill`. ValueError when it names something else than a folder."""
    folder = Path(os.environ.get("DISTILL_HOME", ".distill"))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"DISTILL_HOME is {folder}, which is not a folder: name a folder (it is created if missing)")
    return folder


@dataclass(frozen=True, slots=True)
class LocalJob:
    """A job to run here: its manifest, its data files by the name they are stored under (training file first) with
    their SHA-256 digests in the same order, and how."""

    job: str
    manifest: Manifest
    files: dict[str, Path]
    digests: tuple[str, ...]
    workers: int = 4  # shards labelled at once
    restart: bool = False  # discard the job's earlier progress first
    export_only: bool = False  # the fine-tune only exports the dataset
    out: Path | None = None  # copy the final files here


@dataclass(frozen=True, slots=True)
class Outcome:
    record: JobRecord
    folder: str  # where the job's files are, as shown to the user
    report: str | None  # the evaluation table, once the student is trained
    ended_before: bool = False  # the job had already ended when this run began: nothing was done


def fit_local_model_teacher(manifest: Manifest, workers: int) -> Manifest:
    """A model served on this machine answers as many requests at once as its device batches well
    (shared.local.model_server.in_flight: a few on a CPU, hundreds on a GPU); more only queue there until they time
    out. So requests in flight are that many across the workers (fewer where the manifest sets `limits.concurrency`),
    and the timeout is at least LOCAL_TEACHER_TIMEOUT: a long reply on a busy CPU takes minutes, and a local server
    does not hang up."""
    from shared.local.model_server import in_flight as served_at_once

    if manifest.teacher.kind is not TeacherKind.LOCAL or manifest.teacher.model == TEST_TEACHER:
        return manifest
    asked = manifest.limits.concurrency if "concurrency" in manifest.limits.model_fields_set else MAX_CONCURRENCY
    in_flight = min(asked, max(1, -(-served_at_once() // max(1, workers))))
    timeout = max(manifest.teacher.timeout_seconds, LOCAL_TEACHER_TIMEOUT)
    return manifest.model_copy(update={
        "teacher": manifest.teacher.model_copy(update={"timeout_seconds": timeout}),
        "limits": manifest.limits.model_copy(update={"concurrency": in_flight})})


def run_job(request: LocalJob) -> Outcome:
    """Run the job until it ends (or continue it), with a live progress bar; the final record and report."""
    root, settings, manifest, job = home(), Settings(), request.manifest, request.job
    with job_lock(lock_file(root, job)):
        if request.restart:
            discard(root, settings, job)
        store = open_store(root)
        paths = JobPaths(settings.jobs_container, job)
        record = read_record(store, paths)
        same_job(store, settings, job, manifest, request.digests)
        if record is not None and labeling(record):
            refresh_teacher(store, paths, manifest)

        def submit(runtime: LocalRuntime) -> None:  # data first, manifest last: its arrival starts the job
            runtime.blob_created(upload_job(store, settings, job, manifest, request.files))

        return drive(store, request, submit, ended_before=record is not None and record.final)


def run_request(body: dict[str, Any], request: LocalJob) -> Outcome:
    """Hand a job request (shared.pipeline.job_requests) to the embedded `jobs` queue and run the pipeline until its
    job ends, as `run_job` does; `request` says which job it is, with its manifest and data files here."""
    root, settings = home(), Settings()
    with job_lock(lock_file(root, request.job)):
        store = open_store(root)
        record = read_record(store, JobPaths(settings.jobs_container, request.job))

        return drive(store, request, lambda runtime: hand_over(runtime, body, request.job),
                     ended_before=record is not None and record.final)


def steer_running(body: dict[str, Any], job: str) -> None:
    """Hand a request for a job another `distill run` (or `distill send`) is running to the embedded `jobs` queue of
    this process and handle it here (a cancel: that run's workers notice it); Refused when it is refused."""
    from shared.local.runtime import LocalRuntime

    root = home()
    runtime = LocalRuntime(open_store(root), root / "queues" / "_requests.db", environ=os.environ)
    try:
        hand_over(runtime, body, job)
    finally:
        runtime.close()


def hand_over(runtime: LocalRuntime, body: dict[str, Any], job: str) -> None:
    """Send the request to the runtime's `jobs` queue and handle it now; Refused, with the recorded reason, when the
    handler refused it."""
    message = job_request(body, job)
    runtime.queue.send(Settings().request_queue, [message])
    runtime.handle_requests()
    if refused := refusal(runtime.services, message.message_id):
        raise Refused(refused["reason"], refused["description"], job)


def drive(store: BlobStore, request: LocalJob, submit: Callable[[LocalRuntime], None], *,
          ended_before: bool) -> Outcome:
    """Start the local teacher when the job still labels, let `submit` start or steer the job, deliver its messages
    until it ends, then write the report and copy the final files."""
    from shared.local.deployer import LocalModelDeployer
    from shared.local.progress import ProgressBar
    from shared.local.runtime import LocalRuntime

    root, settings, manifest, job = home(), Settings(), request.manifest, request.job
    paths = JobPaths(settings.jobs_container, job)
    record = read_record(store, paths)
    with contextlib.ExitStack() as stack:
        print(f"job {job}: {len(request.files)} files, teacher {describe_teacher(manifest)}", file=sys.stderr)
        teacher = stack.enter_context(contextlib.ExitStack())  # closed early once training starts
        local_url = None
        if (record is None or labeling(record)) and manifest.teacher.kind is TeacherKind.LOCAL:
            local_url = teacher.enter_context(start_teacher(manifest, request.files))
        bar = ProgressBar(0)
        finetuner = finetuner_for(manifest, root, request.export_only, before_training=teacher.close)
        deployer = LocalModelDeployer()  # serves the students for the evaluation
        stack.callback(deployer.close)
        runtime = LocalRuntime(store, queue_file(root, job), environ=os.environ, local_teacher_url=local_url,
                               progress=bar, workers=request.workers, finetuner=finetuner, deployer=deployer)
        stack.callback(runtime.close)
        if record is None or labeling(record):
            submit(runtime)
        record = read_record(store, paths)
        train_now = record.exported_only and not request.export_only and manifest.student.backend == "local"
        if manifest.finetune and (record.state is JobState.DATASET_READY or train_now):
            finetune_dataset_ready(runtime.services, paths)
        request_evaluation(runtime.services, read_record(store, paths))  # an evaluation an earlier run left
        if record.rows:
            bar.total = record.rows["total"]
        runtime.drain(lambda: read_record(store, paths).final)
        events.flush(runtime.services, job)  # what an earlier, interrupted run left unpublished
        unmark_if_over(store, paths, read_record(store, paths))  # no poll timer here: the run unmarks its job itself
        if bar.done:
            bar.finish()
        record = read_record(store, paths)
        report = report_table(store, paths) if record.state is JobState.SUCCEEDED else None
        if request.out:
            copy_final_files(store, paths, request.out)
    folder = paths.root if os.environ.get(STORAGE_CONNECTION) else str(root / "storage" / paths.root)
    return Outcome(record, folder, report, ended_before)


def labeling(record: JobRecord) -> bool:
    """The job still has rows for the teacher (or is waiting for a higher budget)."""
    return record.state in (JobState.INGESTING, JobState.LABELING, JobState.BUDGET_SPENT)


@contextlib.contextmanager
def job_lock(path: Path) -> Iterator[None]:
    """One `distill run` per job at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"job {path.stem} is already running in another process") from None
        yield


def lock_file(root: Path, job: str) -> Path:
    """The file a `distill run` of the job holds locked while it runs."""
    return root / "locks" / fitted(job, ".lock", FILE_NAME_CHARS)


def queue_file(root: Path, job: str) -> Path:
    """The job's embedded queue (SQLite, with its `-wal`, `-shm` or `-journal` files beside it)."""
    return root / "queues" / fitted(job, ".db", FILE_NAME_CHARS - len("-journal"))


def is_running(job: str) -> bool:
    """Whether a `distill run` of the job holds its lock now (a process that is gone holds none)."""
    try:
        with lock_file(home(), job).open("a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False


def open_store(root: Path) -> BlobStore:
    """The local storage folder, or the storage account (Azurite, say) named by DISTILL_STORAGE_CONNECTION_STRING."""
    if conn := os.environ.get(STORAGE_CONNECTION):
        from shared.storage.azure_blob import AzureBlobStore

        return AzureBlobStore.from_connection_string(conn)
    return LocalBlobStore(root / "storage")


def same_job(store: BlobStore, settings: Settings, job: str, manifest: Manifest, digests: tuple[str, ...]) -> None:
    """Refuse to continue a job whose inputs or result-determining settings differ from this run's: a ValueError that
    names what differs. The first run of a job records them beside its input (FINGERPRINT). The teacher's URL may
    differ (a corrected endpoint): see refresh_teacher."""
    path = f"{settings.input_container}/{job}/{FINGERPRINT}"
    current = flattened(fingerprint(manifest, list(digests)))
    stored = read_json(store, path)
    if stored is not None:
        differs = sorted(key for key in current.keys() | stored.keys()
                         if key not in FIXABLE and current.get(key) != stored.get(key))
        if differs:
            raise ValueError(f"job {job} was started with other {', '.join(differs)}; --restart starts it over with "
                             "these, or give another --job name")
    if stored != current:
        store.write(path, dumps(current))


def flattened(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as `section.field` keys."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(flattened(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def refresh_teacher(store: BlobStore, paths: JobPaths, manifest: Manifest) -> None:
    """A continued job reaches the teacher as this run says (URL, key setting, auth, timeout, retries): the rows still
    to do use a corrected endpoint or key."""
    doc = read_json(store, paths.manifest)
    if doc is None:
        return
    fields = ("url", "key_setting", "auth", "timeout_seconds", "max_retries")
    teacher = {**doc["teacher"], **manifest.teacher.model_dump(mode="json", include=set(fields))}
    if teacher != doc["teacher"]:
        store.write(paths.manifest, dumps({**doc, "teacher": teacher}))


def upload_job(store: BlobStore, settings: Settings, job: str, manifest: Manifest, files: dict[str, Path]) -> str:
    """Data first, manifest last (its arrival starts the job); returns the manifest's blob path. `files` are the
    data files by the name to store them under, the training file first."""
    folder = f"{settings.input_container}/{job}"
    for name, path in files.items():
        store.upload_from(f"{folder}/{name}", path)
    names = list(files)
    doc = manifest.model_dump(mode="json")
    doc["training_file"] = names[0]
    doc["validation_file"] = names[1] if len(names) > 1 else None
    store.write(f"{folder}/manifest.json", dumps(doc))
    return f"{folder}/manifest.json"


def discard(root: Path, settings: Settings, job: str) -> None:
    """Forget everything of the job (`restart`)."""
    for container in (settings.input_container, settings.jobs_container):
        shutil.rmtree(root / "storage" / container / job, ignore_errors=True)
    (root / "storage" / JobPaths(settings.jobs_container, job).active_marker).unlink(missing_ok=True)
    queue = queue_file(root, job)
    for suffix in ("", "-wal", "-shm", "-journal"):
        queue.with_name(queue.name + suffix).unlink(missing_ok=True)


def finetuner_for(manifest: Manifest, root: Path, export_only: bool,
                  before_training: Callable[[], None] | None = None) -> Any:
    """Local training for a local student; export only when asked, or for a registry student (AzureML)."""
    from shared.local.export_only import ExportOnlyFineTuner

    if export_only or not manifest.finetune or manifest.student.backend != "local":
        return ExportOnlyFineTuner
    from shared.local.trainer import LocalTrainer

    return lambda store, publish, topic: LocalTrainer(store, publish, topic, output_root=root / "models",
                                                      before_training=before_training)


def report_table(store: BlobStore, paths: JobPaths) -> str | None:
    """The evaluation's score table, once the evaluation step has written its report."""
    from shared.report import format_table

    report = read_json(store, paths.file("report.json"))
    return None if report is None else format_table(report)


def describe_teacher(manifest: Manifest) -> str:
    if manifest.teacher.kind is not TeacherKind.LOCAL:
        return f"{manifest.teacher.model} at {manifest.teacher.url}"
    if manifest.teacher.model == TEST_TEACHER:
        return "the project's test teacher (it answers from the data's reference answers; it is not a model)"
    return f"{manifest.teacher.model}, served on this machine"


@contextlib.contextmanager
def start_teacher(manifest: Manifest, files: dict[str, Path]) -> Iterator[str]:
    """The local teacher for this run: the test teacher, or a local model served by `distill teacher serve`."""
    if manifest.teacher.model != TEST_TEACHER:
        from shared.local.model_server import start_model_server

        print(f"starting the local teacher {manifest.teacher.model} (loading it takes a minute)", file=sys.stderr)
        with start_model_server(manifest.teacher.model) as url:
            yield url
        return
    from shared.testkit.teacher import FakeTeacher, answers_from_jsonl

    answers: dict[str, str] = {}
    for path in files.values():
        answers.update(answers_from_jsonl(path))
    with FakeTeacher(answers, task=manifest.task) as teacher:
        yield teacher.base_url
