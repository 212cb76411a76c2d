"""The `distill` command line (names and behaviour: cli.md)."""

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

LOCAL_TEACHER_URL = "http://127.0.0.1:8000/v1"


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
        return load_manifest(path)
    except ManifestError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"FAILED: {shown(path)} is not a valid manifest ({len(exc.problems)} problems)")
        return None
    except OSError as exc:
        print(f"{shown(path)}:0: manifest: cannot read it ({exc.strerror})")
        return None


def cmd_validate(args: argparse.Namespace) -> int:
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


def manifest_reports(manifest: Manifest) -> list[FileReport]:
    """What validation finds in each of a manifest's data files."""
    limits = FileLimits(max_rows=manifest.limits.max_rows)
    return [validate_file(p, manifest.task, min_rows=manifest.effective_min_rows, limits=limits, name=shown(p))
            for p in manifest.files.values()]


def cmd_preview(args: argparse.Namespace) -> int:
    from shared.teacher.client import TeacherClient  # pulls in openai: only when needed

    manifest = load_or_report(args.manifest)
    if manifest is None:
        return 1
    teacher = manifest.teacher
    base_url = LOCAL_TEACHER_URL if teacher.kind is TeacherKind.LOCAL else None
    client = TeacherClient(teacher, manifest.inference, base_url=base_url)
    identity = job_id(manifest, [file_digest(p) for p in manifest.files.values()])
    print(f"# job {identity}, prompts {PROMPT_VERSION}, teacher {teacher.kind.value} {teacher.model}")
    if teacher.kind is TeacherKind.LOCAL:
        print(f"# the local teacher is started by `distill run`; {LOCAL_TEACHER_URL} stands for its address")
    report = FileReport.empty(shown(manifest.training_file), manifest.task)
    for row in islice(read_rows(manifest.training_file, manifest.task, report, name=report.file), args.rows):
        for messages in teacher_conversations(manifest.task, row, manifest.prompt):
            print(f"\n# {row.source}:{row.line} (row {row.id[:12]}…)")
            print(f"POST {client.endpoint}")
            if client.auth_header:
                print(client.auth_header)
            print(json.dumps(client.request_body(messages), indent=2, ensure_ascii=False))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from shared.samples import write_nli_sample

    write_nli_sample(args.out, rows=args.rows, validation_rows=args.validation_rows, seed=args.seed)
    print(f"wrote {args.rows} training and {args.validation_rows} validation rows with {shown(args.out)}/manifest.yaml")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from shared.local.run import run

    if bool(args.manifest) == bool(args.task and args.train):
        print("distill run: give a MANIFEST, or --task T --train FILE", file=sys.stderr)
        return 2
    try:
        return run(args)
    except ManifestError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2


def cmd_teacher_serve(args: argparse.Namespace) -> int:
    from shared.local.model_server import main as serve

    argv = ["--model", args.model, "--host", args.host, "--port", str(args.port)]
    if args.max_batch:
        argv += ["--max-batch", str(args.max_batch)]
    return serve(argv)


def cmd_status(args: argparse.Namespace) -> int:
    if args.remote:
        return cmd_remote(args)
    from shared.local.run import status

    return status(args.job)


def cmd_remote(args: argparse.Namespace) -> int:
    from shared.cli.remote import command

    return command(args)


def add_run_options(r: argparse.ArgumentParser) -> None:
    r.add_argument("manifest", nargs="?", type=Path)
    r.add_argument("--task")
    r.add_argument("--train", type=Path)
    r.add_argument("--validation", type=Path)
    r.add_argument("--teacher", metavar="local[:MODEL] | test",
                   help="start a local teacher for the run (default model Qwen2.5-Coder-1.5B-Instruct), or the "
                   "project's test teacher, which answers from the data's reference answers")
    r.add_argument("--teacher-url")
    r.add_argument("--teacher-model")
    r.add_argument("--teacher-key-env", metavar="NAME", help="environment variable holding the teacher's key")
    r.add_argument("--student")
    r.add_argument("--chain-of-thought", action="store_true")
    r.add_argument("--chain-of-density", action="store_true")
    r.add_argument("--max-len-summary", type=int)
    r.add_argument("--rpm", type=int)
    r.add_argument("--tpm", type=int)
    r.add_argument("--budget-tokens", type=int)
    r.add_argument("--min-rows", type=int)
    r.add_argument("--limit", type=int, help="first N rows of each file")
    r.add_argument("--validation-fraction", type=float)
    r.add_argument("--no-finetune", action="store_true", help="stop when the dataset is assembled")
    r.add_argument("--no-cache", action="store_true")
    r.add_argument("--job", help="the job's id (default: derived from what determines its results)")
    r.add_argument("--restart", action="store_true", help="discard the job's earlier progress first")
    r.add_argument("--out", type=Path, help="copy the final files here")
    r.add_argument("--workers", type=int, default=4, help="shards labelled at once")
    r.add_argument("--export-only", action="store_true",
                   help="write the dataset and report the fine-tune as done without training (no torch needed)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distill", description="Distill a teacher LLM into a small student model.")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a manifest and its data files, or data files for a task")
    v.add_argument("files", nargs="+", type=Path, metavar="MANIFEST | FILE")
    v.add_argument("--task", help="validate plain data files for this task (nli, nlu_qa, math, conversation, "
                   "summarization)")
    v.set_defaults(func=cmd_validate)

    pv = sub.add_parser("preview", help="print the exact teacher requests for the first rows")
    pv.add_argument("manifest", type=Path)
    pv.add_argument("--rows", type=int, default=3)
    pv.set_defaults(func=cmd_preview)

    r = sub.add_parser("run", help="run a job end to end on this machine")
    add_run_options(r)
    r.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="local job states (with --remote: the deployed app's)")
    st.add_argument("job", nargs="?")
    st.add_argument("--remote", action="store_true", help="the deployed app's jobs (storage account from the "
                    "environment)")
    st.set_defaults(func=cmd_status)
    add_remote_commands(sub)

    t = sub.add_parser("teacher", help="the local teacher")
    serve = t.add_subparsers(dest="teacher_command", required=True).add_parser(
        "serve", help="serve a local model as an OpenAI-compatible chat-completions endpoint")
    serve.add_argument("--model", default="Qwen2.5-Coder-1.5B-Instruct",
                       help="a known model name, a Hugging Face folder or a .gguf file")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch", type=int, help="requests generated together (default: the server's)")
    serve.set_defaults(func=cmd_teacher_serve)

    s = sub.add_parser("sample", help="write the project's generated NLI sample data and a manifest")
    s.add_argument("--task", choices=["nli"], default="nli")
    s.add_argument("--rows", type=int, default=120)
    s.add_argument("--validation-rows", type=int, default=80)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, default=Path(".distill/sample"))
    s.set_defaults(func=cmd_sample)
    return p


def add_remote_commands(sub: argparse._SubParsersAction) -> None:
    """submit, watch, download, cancel: a deployed app's jobs, through its storage account (shared.cli.remote)."""
    su = sub.add_parser("submit", help="upload a manifest's data, then the manifest, to the deployed app")
    su.add_argument("manifest", type=Path)
    su.add_argument("--job", help="the job's id (default: derived from what determines its results)")
    su.add_argument("--quiet", action="store_true", help="no upload progress")
    w = sub.add_parser("watch", help="follow a deployed job until it ends; the exit code tells how it ended")
    w.add_argument("job")
    w.add_argument("--interval", type=float, default=10.0, help="seconds between polls (default 10)")
    w.add_argument("--timeout", type=float, help="give up after this many seconds (exit 124)")
    d = sub.add_parser("download", help="a deployed job's final files")
    d.add_argument("job")
    d.add_argument("--out", type=Path, help="the folder to write them to (default: ./JOB)")
    c = sub.add_parser("cancel", help="stop a deployed job's generation, keeping what was labelled")
    c.add_argument("job")
    for p in (su, w, d, c):
        p.set_defaults(func=cmd_remote)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as exc:  # bad option values, a job already running: one clear line
        print(f"distill {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
