"""`distill validate`, `distill preview` and `distill sample`: a job's data and teacher requests, checked before
anything runs, and the project's own sample data."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

from shared.identity import file_digest, job_id
from shared.manifest.load import load_manifest
from shared.manifest.model import Manifest, ManifestError, TeacherKind
from shared.prompts import PROMPT_VERSION, teacher_conversations
from shared.tasks import Task
from shared.validation import FileLimits, FileReport, read_rows, validate_file


def shown(path: Path) -> str:
    """A path as the user would write it: relative to the current folder when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_reports(reports: Sequence[FileReport]) -> int:
    """Print every problem and a summary; the exit code is 1 when any file has an error."""
    for report in reports:
        for problem in report.problems:
            print(problem)
        if report.problems_dropped:
            print(f"{report.file}:0: more-problems: {report.problems_dropped} more problems not shown")
    for report in reports:
        print(f"{report.file}: {report.rows} rows, {report.references} with reference answers, "
              f"{report.errors} errors, {report.warnings} warnings")
    errors = sum(r.errors for r in reports)
    warnings = sum(r.warnings for r in reports)
    verdict = "FAILED" if errors else "OK"
    print(f"{verdict}: {len(reports)} files, {sum(r.rows for r in reports)} rows, {errors} errors, {warnings} warnings")
    return 1 if errors else 0


def load_or_report(path: Path) -> Manifest | None:
    try:
        return load_manifest(path, check_files=True)
    except ManifestError as exc:
        for problem in exc.problems:
            print(problem)
        count = len(exc.problems)
        print(f"FAILED: {shown(path)} is not a valid manifest ({count} problem{'' if count == 1 else 's'})")
        return None
    except OSError as exc:
        print(f"{shown(path)}:0: manifest: cannot read it ({exc.strerror})")
        return None


def manifest_reports(manifest: Manifest) -> list[FileReport]:
    """What validation finds in each of a manifest's data files."""
    limits = FileLimits(max_rows=manifest.limits.max_rows)
    return [validate_file(p, manifest.task, min_rows=manifest.effective_min_rows, limits=limits, name=shown(p))
            for p in manifest.files.values()]


def validate(args: argparse.Namespace) -> int:
    if args.task:
        task = Task.parse(args.task)
        return print_reports([validate_file(p, task, name=shown(p)) for p in args.files])
    if len(args.files) != 1:
        print("distill validate: give one manifest, or --task T and data files", file=sys.stderr)
        return 2
    manifest = load_or_report(args.files[0])
    if manifest is None:
        return 1
    return print_reports(manifest_reports(manifest))


def preview(args: argparse.Namespace) -> int:
    from shared.teacher.factory import adapter_for  # pulls in openai: only when needed

    manifest = load_or_report(args.manifest)
    if manifest is None:
        return 1
    teacher = manifest.teacher
    local = teacher.kind is TeacherKind.LOCAL
    adapter = adapter_for(teacher, manifest.inference, local_url=LOCAL_URL_SHOWN)
    identity = job_id(manifest, [file_digest(p) for p in manifest.files.values()])
    print(f"# job {identity}, prompts {PROMPT_VERSION}, teacher {teacher.kind.value} {teacher.model}")
    if local:
        print(f"# the local teacher is started by `distill run`; {LOCAL_URL_SHOWN} stands for its address")
    report = FileReport.empty(shown(manifest.training_file), manifest.task)
    for row in islice(read_rows(manifest.training_file, manifest.task, report, name=report.file), args.rows):
        for messages in teacher_conversations(manifest.task, row, manifest.prompt):
            print(f"\n# {row.source}:{row.line} (row {row.id[:12]}…)")
            print(f"POST {adapter.endpoint}")
            if adapter.auth_header:
                print(adapter.auth_header)
            print(json.dumps(adapter.request_body(messages), indent=2, ensure_ascii=False))
    return 0


LOCAL_URL_SHOWN = "http://127.0.0.1:8000/v1"  # where `distill teacher serve` listens by default


def sample(args: argparse.Namespace) -> int:
    from shared.local.samples import write_nli_sample

    write_nli_sample(args.out, rows=args.rows, validation_rows=args.validation_rows, seed=args.seed)
    print(f"wrote {args.rows} training and {args.validation_rows} validation rows with {shown(args.out)}/manifest.yaml")
    return 0
