"""The user's commands for a deployed app: `distill submit | watch | download | cancel` and `distill status --remote`.

`distill submit --queue` starts the job with a request on the app's `jobs` queue instead of uploading the manifest;
the Service Bus comes from DISTILL_SERVICEBUS_CONNECTION_STRING or DistillServiceBus (a connection string), or the
namespace in DistillServiceBus__fullyQualifiedNamespace (signed in with the shell's Azure identity).

They work through the app's storage account alone, as the app does: a job starts when its manifest lands in the
input container (its data files first, in the same folder `input/<job>/`), and the job's record and files are in
`jobs/<job>/`. The account comes from the environment, under the names the Functions app uses: a connection string in
DISTILL_STORAGE_CONNECTION_STRING or DistillStorage, or the account's blob URL in DistillStorage__serviceUri
(signed in through DefaultAzureCredential). A connection string is never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

from shared.cli.data import load_or_report, manifest_reports, print_reports
from shared.cli.show import described
from shared.identity import file_digest, job_id
from shared.jobs.blobs import copy_final_files, dumps
from shared.jobs.paths import JOB_ID_RULE, JobPaths, is_job_id
from shared.jobs.record import JobRecord, JobState, read_record
from shared.jobs.stage import progress_line
from shared.manifest.model import Manifest, TeacherKind
from shared.pipeline.cancel import request_cancel
from shared.pipeline.ingest import MANIFEST_NAMES
from shared.pipeline.messages import job_request
from shared.ports import QueueSender
from shared.settings import Settings
from shared.storage.azure_blob import AzureBlobStore

CONNECTION_SETTINGS = ("DISTILL_STORAGE_CONNECTION_STRING", "DistillStorage")
ACCOUNT_URL_SETTING = "DistillStorage__serviceUri"
T = TypeVar("T")
QUEUE_CONNECTION_SETTINGS = ("DISTILL_SERVICEBUS_CONNECTION_STRING", "DistillServiceBus")
NAMESPACE_SETTING = "DistillServiceBus__fullyQualifiedNamespace"

EXIT_FAILED = 1  # the job failed, or a command could not do what it was asked
EXIT_NO_JOB = 2  # no such job, or the storage account is not configured
EXIT_CANCELLED = 3  # `watch`: the job ended cancelled
EXIT_TIMEOUT = 124  # `watch --timeout`: the job was still running (as coreutils `timeout` exits)


def open_store(environ: Mapping[str, str] = os.environ) -> AzureBlobStore:
    """The deployed app's storage account, from the environment."""
    return from_environment(environ, "storage account", CONNECTION_SETTINGS, AzureBlobStore.from_connection_string,
                            ACCOUNT_URL_SETTING, AzureBlobStore.from_account_url)


def from_environment(environ: Mapping[str, str], what: str, connections: tuple[str, ...],
                     by_connection: Callable[[str], T], identity: str, by_identity: Callable[[str], T]) -> T:
    """A client of the deployed app's `what`: from the first connection string set, else the identity-based
    setting (signed in with the shell's Azure identity)."""
    for name in connections:
        if value := environ.get(name):
            return by_connection(value)
    if value := environ.get(identity):
        return by_identity(value)
    raise RuntimeError(f"no {what}: set one of {', '.join((*connections, identity))} to the deployed app's {what}")


@dataclass
class Remote:
    store: AzureBlobStore
    settings: Settings = field(default_factory=Settings)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    sleep: Callable[[float], None] = time.sleep
    queue: QueueSender | None = None  # the app's Service Bus: `submit --queue` sends a start request there

    def paths(self, job: str) -> JobPaths:
        return JobPaths(self.settings.jobs_container, job)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def manifest_blob(self, job: str) -> str | None:
        """The blob path of the job's uploaded manifest, if there is one."""
        for name in MANIFEST_NAMES:
            path = f"{self.settings.input_container}/{job}/{name}"
            if self.store.read(path) is not None:
                return path
        return None

    def record(self, job: str) -> JobRecord | None:
        return read_record(self.store, self.paths(job))

    # -- submit

    def submit(self, manifest: Manifest, job: str, *, progress: bool = True) -> int:
        """Upload the data files, then the manifest (whose arrival starts the job), to `input/<job>/`; with a queue,
        send a start request naming the uploaded files instead of the manifest (shared.pipeline.job_requests)."""
        if manifest.teacher.kind is TeacherKind.LOCAL:
            self.say("distill submit: the deployed app cannot reach a teacher on this machine (teacher.kind local); "
                     "give the manifest a teacher the app can call (azure_openai, azure_ai or openai_compatible)")
            return EXIT_FAILED
        if (existing := self.manifest_blob(job)) is not None:
            record = self.record(job)
            state = record.state if record else "submitted, not yet ingested"
            self.say(f"job {job} was already submitted ({existing}): {state}. `distill watch {job}` follows it; "
                     "give --job NAME to submit it again as another job")
            return 0
        folder = f"{self.settings.input_container}/{job}"
        doc = manifest.model_dump(mode="json")
        for split, src in manifest.files.items():  # each file beside the manifest, which names it relative to itself
            name = f"{split}.jsonl"
            self.store.upload_from(f"{folder}/{name}", src, progress=self._upload_progress(name, src, progress))
            doc["training_file" if split == "train" else "validation_file"] = name
        if self.queue is not None:
            doc |= {field: f"{folder}/{doc[field]}" for field in ("training_file", "validation_file") if doc[field]}
            body = {"version": 1, "action": "start", "job": job, "manifest": doc}
            self.queue.send(self.settings.request_queue, [job_request(body, job)])
            self.say(f"sent a start request for job {job} to the {self.settings.request_queue} queue. Follow it "
                     f"with `distill watch {job}`")
            return 0
        self.store.write(f"{folder}/manifest.json", dumps(doc))
        self.say(f"submitted job {job}: {folder}/manifest.json. Follow it with `distill watch {job}`")
        return 0

    def _upload_progress(self, name: str, src: Path, shown: bool) -> Callable[[int, int | None], None] | None:
        if not shown:
            return None
        size = src.stat().st_size
        interactive = self.out.isatty()
        self.say(f"uploading {name} ({_size(size)})")

        def report(sent: int, total: int | None) -> None:
            total = total or size
            line = f"  {name}: {_size(sent)} of {_size(total)} ({sent / total:.0%})" if total else ""
            if interactive:
                print(f"\r{line}", end="" if sent < total else "\n", file=self.out, flush=True)
            elif sent >= total:
                self.say(line)

        return report

    # -- status, watch

    def status(self, job: str | None) -> int:
        """One job's record as a summary, or every job's state."""
        if job is not None:
            record = self.record(job)
            if record is None and self.manifest_blob(job) is None:
                return self._no_record(job)
            self.say(described(record, self.paths(job).root) if record else f"job {job}: {progress_line(None)}")
            return 0
        for name, record in self.jobs():
            self.say(f"{name}\t{record.state if record else 'submitted'}")
        return 0

    def jobs(self) -> Iterator[tuple[str, JobRecord | None]]:
        """Every submitted job (a manifest in the input container) and its record, if it has one yet."""
        seen = set()
        for path in self.store.list(f"{self.settings.input_container}/"):
            parts = path.split("/")
            if len(parts) == 3 and parts[2] in MANIFEST_NAMES and parts[1] not in seen:
                seen.add(parts[1])
                yield parts[1], self.record(parts[1])

    def watch(self, job: str, *, interval: float = 10.0, timeout: float | None = None) -> int:
        """Poll the job's record until it is final, printing each change; the exit code tells the outcome."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            record = self.record(job)
            if record is None and self.manifest_blob(job) is None:
                return self._no_record(job)
            line = progress_line(record)
            if line != last:
                self.say(f"{time.strftime('%H:%M:%S')} job {job}: {line}")
                last = line
            if record is not None and record.final:
                self.say(described(record, self.paths(job).root))
                return outcome(record)
            if deadline is not None and time.monotonic() >= deadline:
                self.say(f"job {job} is still {record.state if record else 'waiting'} after {timeout:g} s")
                return EXIT_TIMEOUT
            self.sleep(interval)

    # -- download, cancel

    def download(self, job: str, out: Path) -> int:
        """The job's final files into `out`: train, validation, rejected, status.json, and the evaluation's
        report.* and evaluation.jsonl once there."""
        record = self.record(job)
        if record is None:
            return self._no_record(job)
        copy_final_files(self.store, self.paths(job), out)
        got = sorted(p.name for p in out.iterdir() if p.is_file())
        self.say(f"job {job} ({record.state}): {', '.join(got)} in {out}")
        if not record.final:
            self.say(f"note: job {job} is still {record.state}; its dataset files appear once it is assembled")
        return 0

    def cancel(self, job: str) -> int:
        """Stop generation and keep what was labelled; safe to repeat."""
        if self.record(job) is None and self.manifest_blob(job) is None:
            return self._no_record(job)
        result = request_cancel(self.store, self.paths(job))
        state = result.record.state
        if result.refused:
            self.say(f"job {job} cannot be cancelled: {result.refused}")
            return EXIT_FAILED
        if result.marked:
            self.say(f"job {job} ({state}): cancelled. No more rows go to the teacher; the rows labelled so far are "
                     f"assembled and the job ends `cancelled` without a fine-tune (`distill watch {job}`)")
        elif result.record.final:
            self.say(f"job {job} is already {state}; nothing to cancel")
        else:
            self.say(f"job {job} ({state}) was already cancelled; it ends `cancelled` once its shards are in")
        return 0

    def _no_record(self, job: str) -> int:
        self.say(f"no job {job} in the storage account (nothing under {self.paths(job).root}/ or "
                 f"{self.settings.input_container}/{job}/)")
        return EXIT_NO_JOB


def outcome(record: JobRecord) -> int:
    """`watch`'s exit code for a final record: 0 for the job's goal (succeeded, or dataset ready)."""
    if record.state in (JobState.SUCCEEDED, JobState.DATASET_READY):
        return 0
    return EXIT_CANCELLED if record.state is JobState.CANCELLED else EXIT_FAILED


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def open_queue(environ: Mapping[str, str] = os.environ) -> QueueSender:
    """The deployed app's Service Bus, from the environment: a connection string, or the namespace signed in with the
    shell's Azure identity (DefaultAzureCredential)."""
    from shared.queueing.servicebus import ServiceBusQueueSender

    return from_environment(environ, "Service Bus namespace", QUEUE_CONNECTION_SETTINGS,
                            ServiceBusQueueSender.from_connection_string, NAMESPACE_SETTING,
                            ServiceBusQueueSender.from_namespace)


def command(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Run one remote command from the parsed command line; a storage error is one readable line."""
    from azure.core.exceptions import AzureError

    queue = open_queue(environ) if getattr(args, "queue", False) else None
    remote = Remote(open_store(environ), Settings.from_env(environ), queue=queue)
    try:
        return run_command(remote, args)
    except AzureError as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"distill {args.command}: the storage account answered {type(exc).__name__}: {first_line}",
              file=sys.stderr)
        return EXIT_FAILED


def run_command(remote: Remote, args: argparse.Namespace) -> int:
    if args.command == "status":
        return remote.status(args.job)
    if args.command == "watch":
        return remote.watch(args.job, interval=args.interval, timeout=args.timeout)
    if args.command == "download":
        return remote.download(args.job, args.out or Path(args.job))
    if args.command == "cancel":
        return remote.cancel(args.job)
    return submit(remote, args)


def submit(remote: Remote, args: argparse.Namespace) -> int:
    """`distill submit MANIFEST`: check the manifest and its data here, then upload them."""
    manifest = load_or_report(args.manifest)
    if manifest is None:
        return EXIT_FAILED
    reports = manifest_reports(manifest)
    if any(r.errors for r in reports):
        return print_reports(reports)
    job = args.job or job_id(manifest, [file_digest(p) for p in manifest.files.values()])
    if not is_job_id(job):
        raise ValueError(f"{job!r} is not a job id: {JOB_ID_RULE}")
    return remote.submit(manifest, job, progress=not args.quiet)
