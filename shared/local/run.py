"""`distill run`: one job end to end on this machine, through the same functions Azure runs.

The job's data and manifest are uploaded to the local storage folder (data first, manifest last), the BlobCreated
event is delivered to the ingest function, and the runtime drives the queues until the job reaches its goal.
Running the same command again continues the job; `--restart` discards it first.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shared.identity import file_digest, job_id
from shared.jobs import JOB_ID_RULE, JobPaths, JobState, dumps, is_job_id, read_json
from shared.manifest.load import load_manifest, manifest_from_dict
from shared.manifest.model import Manifest, TeacherKind
from shared.pipeline.aggregate import finetune_dataset_ready
from shared.pipeline.label import LOCAL_TEACHER_URL
from shared.ports import BlobStore
from shared.storage.local import LocalBlobStore

TEST_TEACHER = "distill-test-teacher"
DEFAULT_LOCAL_TEACHER = "Qwen2.5-Coder-1.5B-Instruct"
STORAGE_CONNECTION = "DISTILL_STORAGE_CONNECTION_STRING"
OUTPUT_FILES = ("train.jsonl", "validation.jsonl", "rejected.jsonl", "status.json")
LOCAL_TEACHER_TIMEOUT = 1800.0


def home() -> Path:
    return Path(os.environ.get("DISTILL_HOME", ".distill"))


def build_manifest(args: argparse.Namespace) -> Manifest:
    """The manifest file, or one made from --task/--train, with every command-line flag applied."""
    if args.manifest:
        doc = load_manifest(args.manifest).model_dump(mode="json")
    else:
        doc = {"task": args.task, "training_file": str(args.train)}
        if args.validation:
            doc["validation_file"] = str(args.validation)
    apply_flags(doc, args)
    return manifest_from_dict(doc, Path.cwd(), source=str(args.manifest or "command line"))


def apply_flags(doc: dict[str, Any], args: argparse.Namespace) -> None:
    """Flags win over the manifest (cli.md)."""
    def put(section: str, key: str, value: Any) -> None:
        if value is not None and value is not False:
            doc.setdefault(section, {})[key] = value

    if args.teacher == "test":
        doc["teacher"] = {"kind": TeacherKind.LOCAL.value, "model": TEST_TEACHER}
    elif args.teacher and args.teacher.split(":", 1)[0] == "local":
        model = args.teacher.partition(":")[2] or DEFAULT_LOCAL_TEACHER
        doc["teacher"] = {"kind": TeacherKind.LOCAL.value, "model": model}
    elif args.teacher:
        raise ValueError(f"--teacher {args.teacher}: expected `local`, `local:MODEL` or `test`; any other "
                         "OpenAI-compatible server is given with --teacher-url and --teacher-model")
    if args.teacher_url:
        doc["teacher"] = {"kind": TeacherKind.OPENAI_COMPATIBLE.value, "url": args.teacher_url,
                          "model": args.teacher_model or doc.get("teacher", {}).get("model", "teacher")}
    put("teacher", "key_setting", args.teacher_key_env)
    put("student", "model", args.student)
    put("prompt", "chain_of_thought", args.chain_of_thought)
    put("prompt", "chain_of_density", args.chain_of_density)
    put("prompt", "max_len_summary", args.max_len_summary)
    put("limits", "requests_per_minute", args.rpm)
    put("limits", "tokens_per_minute", args.tpm)
    put("limits", "budget_tokens", args.budget_tokens)
    if args.min_rows is not None:
        doc["min_rows"] = args.min_rows
    if args.validation_fraction is not None:
        doc["validation_fraction"] = args.validation_fraction
    if args.no_finetune:
        doc["finetune"] = False
    if args.no_cache:
        doc["cache"] = False


def fit_local_model_teacher(manifest: Manifest, workers: int) -> Manifest:
    """A model served on this machine answers `max_batch` requests at a time; more in flight only queue there
    until they time out. So requests in flight are capped at its batch, and the timeout is at least
    LOCAL_TEACHER_TIMEOUT: a long reply on a busy CPU takes minutes, and a local server does not hang up."""
    from shared.local.model_server import DEFAULT_MAX_BATCH

    if manifest.teacher.kind is not TeacherKind.LOCAL or manifest.teacher.model == TEST_TEACHER:
        return manifest
    in_flight = min(manifest.limits.concurrency, max(1, -(-DEFAULT_MAX_BATCH // max(1, workers))))
    timeout = max(manifest.teacher.timeout_seconds, LOCAL_TEACHER_TIMEOUT)
    return manifest.model_copy(update={
        "teacher": manifest.teacher.model_copy(update={"timeout_seconds": timeout}),
        "limits": manifest.limits.model_copy(update={"concurrency": in_flight})})


def first_rows(src: Path, dest: Path, limit: int) -> Path:
    """The first `limit` non-blank lines of a file (for --limit)."""
    with src.open("rb") as f, dest.open("wb") as out:
        kept = 0
        for line in f:
            if kept == limit:
                break
            if line.strip():
                out.write(line if line.endswith(b"\n") else line + b"\n")
                kept += 1
    return dest


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


def open_store(root: Path) -> BlobStore:
    """The local storage folder, or the storage account (Azurite, say) named by DISTILL_STORAGE_CONNECTION_STRING."""
    if conn := os.environ.get(STORAGE_CONNECTION):
        from shared.storage.azure_blob import AzureBlobStore

        return AzureBlobStore.from_connection_string(conn)
    return LocalBlobStore(root / "storage")


def upload_job(store: BlobStore, job: str, manifest: Manifest, files: dict[str, Path]) -> str:
    """Data first, manifest last (its arrival starts the job); returns the manifest's blob path."""
    for name, path in files.items():
        store.upload_from(f"input/{job}/{name}", path)
    doc = manifest.model_dump(mode="json")
    doc["training_file"] = "train.jsonl"
    doc["validation_file"] = "validation.jsonl" if "validation.jsonl" in files else None
    store.write(f"input/{job}/manifest.json", dumps(doc))
    return f"input/{job}/manifest.json"


def discard(root: Path, job: str) -> None:
    """--restart: forget everything of the job."""
    for path in (root / "storage" / "input" / job, root / "storage" / "jobs" / job):
        shutil.rmtree(path, ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        (root / "queues" / f"{job}.db{suffix}").unlink(missing_ok=True)


def summary(record: dict[str, Any], folder: Path | str) -> str:
    lines = [f"job {record['job']}: {record['state']}"]
    if "accepted" in record:
        accepted = record["accepted"]
        lines.append(f"  rows: {accepted['train']} train + {accepted['validation']} validation accepted, "
                     f"{record['rejected']} rejected (success ratio {record['success_ratio']:.1%})")
        if record.get("rejected_by_reason"):
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(record["rejected_by_reason"].items()))
            lines.append(f"  rejected by reason: {reasons}")
        lines.append(f"  tokens: {record['tokens']['prompt']:,} prompt + {record['tokens']['completion']:,} completion")
    if record.get("finetune"):
        ft = record["finetune"]
        export_only = ft.get("status") == "Completed" and not ft.get("output_model")
        note = " (export only: the dataset was exported, no training ran yet)" if export_only else ""
        lines.append(f"  fine-tune {ft['name']}: {ft.get('status') or 'not finished'}{note}")
    if record.get("reason"):
        lines.append(f"  stopped: {record['reason']}")
    for error in record.get("errors", []):
        lines.append(f"  error: {error}")
    lines.append(f"  files: {folder}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from shared.local.progress import ProgressBar
    from shared.local.runtime import LocalRuntime

    manifest = fit_local_model_teacher(build_manifest(args), args.workers)
    root = home()
    scratch = root / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    files = {f"{split}.jsonl": path for split, path in manifest.files.items()}
    if args.limit:
        files = {name: first_rows(path, scratch / f"{os.getpid()}-{name}", args.limit) for name, path in files.items()}
    job = args.job or job_id(manifest, [file_digest(p) for p in files.values()])
    if not is_job_id(job):
        raise ValueError(f"--job {job!r}: {JOB_ID_RULE}")
    environ = dict(os.environ)
    with job_lock(root / "locks" / f"{job}.lock"), contextlib.ExitStack() as stack:
        if args.restart:
            discard(root, job)
        store = open_store(root)
        paths = JobPaths("jobs", job)
        record = read_json(store, paths.status)
        labeling = record is None or record["state"] in (JobState.INGESTING, JobState.LABELING,
                                                         JobState.BUDGET_SPENT)
        print(f"job {job}: {len(files)} files, teacher {describe_teacher(manifest)}", file=sys.stderr)
        teacher = stack.enter_context(contextlib.ExitStack())  # closed early once training starts
        if labeling and manifest.teacher.kind is TeacherKind.LOCAL:
            environ[LOCAL_TEACHER_URL] = teacher.enter_context(start_teacher(manifest, files))
        bar = ProgressBar(0)
        finetuner = finetuner_for(manifest, root, args.export_only, before_training=teacher.close)
        runtime = LocalRuntime(store, root / "queues" / f"{job}.db", environ=environ, progress=bar.add,
                               workers=args.workers, finetuner=finetuner)
        stack.callback(runtime.close)
        if labeling:
            runtime.blob_created(upload_job(store, job, manifest, files))
        record = read_json(store, paths.status)
        if record["state"] == JobState.DATASET_READY and manifest.finetune:
            finetune_dataset_ready(runtime.services, paths)
        if record.get("rows"):
            bar.total = record["rows"]["total"]
        runtime.drain(lambda: JobState(read_json(store, paths.status)["state"]).final)
        if bar.done:
            bar.finish()
        record = read_json(store, paths.status)
        print(summary(record, paths.root if os.environ.get(STORAGE_CONNECTION) else root / "storage" / paths.root))
        if record["state"] == JobState.SUCCEEDED and record["finetune"].get("output_model"):
            print(report_for(store, paths, manifest, record["finetune"]["output_model"]))
        if args.out:
            copy_outputs(store, paths, args.out)
    goal = JobState.DATASET_READY if not manifest.finetune else JobState.SUCCEEDED
    return 0 if record["state"] == goal else 1


def finetuner_for(manifest: Manifest, root: Path, export_only: bool,
                  before_training: Callable[[], None] | None = None) -> Any:
    """Local training for a local student; export only when asked, or for a registry student (AzureML)."""
    from shared.local.export_only import ExportOnlyFineTuner

    if export_only or not manifest.finetune or manifest.student.backend != "local":
        return ExportOnlyFineTuner
    from shared.local.trainer import LocalTrainer

    return lambda store, publish, topic: LocalTrainer(store, publish, topic, output_root=root / "models",
                                                      before_training=before_training)


def report_for(store: BlobStore, paths: JobPaths, manifest: Manifest, distilled: str) -> str:
    """The evaluation table: computed once after the fine-tune, read back on later runs."""
    from shared.local.report import evaluate_job, format_table

    report = read_json(store, paths.file("report.json"))
    if report is None:
        report = evaluate_job(store, paths, manifest, base_model=manifest.student.model, distilled_model=distilled)
    return format_table(report)


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
        from shared.local.model_server import start_local_teacher

        print(f"starting the local teacher {manifest.teacher.model} (loading it takes a minute)", file=sys.stderr)
        with start_local_teacher(manifest.teacher.model) as url:
            yield url
        return
    from shared.testkit.teacher import FakeTeacher, answers_from_jsonl

    answers: dict[str, str] = {}
    for path in files.values():
        answers.update(answers_from_jsonl(path))
    with FakeTeacher(answers, task=manifest.task) as teacher:
        yield teacher.base_url


def copy_outputs(store: BlobStore, paths: JobPaths, out: Path) -> None:
    """--out: the final files (and the report, once there is one) copied out of storage."""
    out.mkdir(parents=True, exist_ok=True)
    reports = [p.rsplit("/", 1)[1] for p in store.list(paths.file("report."))]
    for name in (*OUTPUT_FILES, *reports):
        store.download_to(paths.file(name), out / name)


def status(job: str | None) -> int:
    """`distill status [JOB]`: local job states."""
    jobs = home() / "storage" / "jobs"
    if job and not is_job_id(job):
        print(f"distill status: {job!r} is not a job id: {JOB_ID_RULE}", file=sys.stderr)
        return 2
    paths = [jobs / job / "status.json"] if job else sorted(jobs.glob("*/status.json"))
    if job and not paths[0].exists():
        print(f"no local job {job} under {jobs}", file=sys.stderr)
        return 1
    for path in paths:
        record = json.loads(path.read_text())
        print(summary(record, path.parent) if job else f"{record['job']}\t{record['state']}")
    return 0
