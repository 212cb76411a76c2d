"""`distill run` and `distill status`: jobs on this machine (shared.local.run drives them)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from shared.cli.data import shown
from shared.cli.show import summary
from shared.identity import file_digest, job_id
from shared.jobs.paths import JOB_ID_RULE, is_job_id
from shared.jobs.record import JobRecord, JobState
from shared.local.models import TEACHER
from shared.local.run import TEST_TEACHER, LocalJob, Outcome, fit_local_model_teacher, home, is_running, run_job
from shared.manifest.load import load_manifest, manifest_from_dict, unreadable
from shared.manifest.model import Manifest, ManifestError, TeacherKind, TeacherSettings
from shared.pipeline.ingest import MANIFEST_NAMES
from shared.settings import Settings
from shared.storage import is_blob_path


def run(args: argparse.Namespace) -> int:
    if bool(args.manifest) == bool(args.task and args.train):
        print("distill run: give a MANIFEST, or --task T --train FILE", file=sys.stderr)
        return 2
    try:
        manifest = fit_local_model_teacher(build_manifest(args), args.workers)
    except ManifestError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    for path in manifest.files.values():
        if problem := unreadable(path):
            raise ValueError(f"{shown(path)}: {problem}")
    if args.out and args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out}: a file is there; the final files go into a folder")
    scratch = home() / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as copies:  # --limit's copies go when the run ends
        files = stored_names(manifest.files)
        if args.limit:
            files = {name: first_rows(path, Path(copies) / name, args.limit) for name, path in files.items()}
        digests = tuple(file_digest(p) for p in files.values())
        job = args.job or job_id(manifest, list(digests))
        if not is_job_id(job):
            raise ValueError(f"--job {job!r}: {JOB_ID_RULE}")
        outcome = run_job(LocalJob(job, manifest, files, digests, workers=args.workers, restart=args.restart,
                                   export_only=args.export_only, out=args.out))
    return report_outcome(outcome, job, JobState.SUCCEEDED if manifest.finetune else JobState.DATASET_READY,
                          "distill run")


def report_outcome(outcome: Outcome, job: str, goal: JobState, command: str) -> int:
    """Print how the job ended (and its report); exit 0 when it reached `goal`, else 1."""
    print(summary(outcome.record, outcome.folder))
    if outcome.report:
        print(outcome.report)
    if outcome.ended_before and outcome.record.state is not goal:
        print(f"{command}: job {job} had already ended ({outcome.record.state}) in an earlier run, so nothing was "
              "done now; `distill run --restart` runs it again from the start (good replies kept in the cache are "
              "not paid for again)", file=sys.stderr)
    return 0 if outcome.record.state is goal else 1


def build_manifest(args: argparse.Namespace) -> Manifest:
    """The manifest file, or one made from --task/--train, with every command-line flag applied."""
    if args.manifest:
        doc = load_manifest(args.manifest, check_files=True).model_dump(mode="json")
    else:
        doc = {"task": args.task, "training_file": str(args.train)}
        if args.validation:
            doc["validation_file"] = str(args.validation)
    apply_flags(doc, args)
    return manifest_from_dict(doc, Path.cwd(), source=str(args.manifest or "command line"))


DEFAULT_MODEL = TeacherSettings.model_fields["model"].default


def apply_flags(doc: dict[str, Any], args: argparse.Namespace) -> None:
    """Flags win over the manifest."""
    def put(section: str, key: str, value: Any) -> None:
        if value is not None and value is not False:
            doc.setdefault(section, {})[key] = value

    if args.teacher == "test":
        doc["teacher"] = {"kind": TeacherKind.LOCAL.value, "model": TEST_TEACHER}
    elif args.teacher and args.teacher.split(":", 1)[0] == "local":
        doc["teacher"] = {"kind": TeacherKind.LOCAL.value, "model": args.teacher.partition(":")[2] or TEACHER.name}
    elif args.teacher:
        raise ValueError(f"--teacher {args.teacher}: expected `local`, `local:MODEL` or `test`; any other "
                         "OpenAI-compatible server is given with --teacher-url and --teacher-model")
    if args.teacher_url:
        doc["teacher"] = {"url": args.teacher_url,  # its kind follows from the URL (shared.manifest.endpoints)
                          "model": args.teacher_model or doc.get("teacher", {}).get("model", "teacher")}
    teacher = doc.setdefault("teacher", {"kind": TeacherKind.LOCAL.value})
    local = teacher.get("kind", TeacherKind.OPENAI_COMPATIBLE.value) == TeacherKind.LOCAL.value
    if args.teacher_model and local:
        raise ValueError("--teacher-model names the model of the server at --teacher-url, which is not given; "
                         "a model served on this machine is --teacher local:MODEL")
    if args.teacher_model:
        teacher["model"] = args.teacher_model
    if local and teacher.get("model", DEFAULT_MODEL) == DEFAULT_MODEL:  # no model named: the packaged teacher
        teacher["model"] = TEACHER.name
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


def stored_names(files: dict[str, Path]) -> dict[str, Path]:
    """The data files by the name the job stores them under, training file first: the user's own file names, so
    every problem and rejection names the file the user gave (`<split>.jsonl` when the names clash or are not
    blob names)."""
    named: dict[str, Path] = {}
    for split, path in files.items():
        name = path.name
        if name in named or name in MANIFEST_NAMES or not is_blob_path(f"input/job/{name}"):
            name = next(n for n in (f"{split}.jsonl", f"{split}-data.jsonl") if n not in named)
        named[name] = path
    return named


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


def status(job: str | None) -> int:
    """`distill status [JOB]`: local job states."""
    jobs = home() / "storage" / Settings().jobs_container
    if job and not is_job_id(job):
        print(f"distill status: {job!r} is not a job id: {JOB_ID_RULE}", file=sys.stderr)
        return 2
    paths = [jobs / job / "status.json"] if job else sorted(jobs.glob("*/status.json"))
    if job and not paths[0].exists():
        print(f"no local job {job} under {jobs}", file=sys.stderr)
        return 1
    for path in paths:
        record = JobRecord.from_json(json.loads(path.read_text()))
        stopped = not record.final and not is_running(record.job)
        state = f"{record.state} (interrupted)" if stopped else str(record.state)
        print(summary(record, path.parent) if job else f"{record.job}\t{state}")
        if job and stopped:
            print(f"  interrupted: no `distill run` is running it; the same command with --job {record.job} "
                  "continues where it stopped")
    return 0
