"""The `distill` command line: its parser and dispatch. Each command lives in a module of its own, imported when it
runs: `data` (validate, preview, sample), `run` (run and status on this machine), `remote` (a deployed app's jobs)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from shared import redaction
from shared.local.models import TEACHER


def cmd_send(args: argparse.Namespace) -> int:
    from shared.cli.send import send

    return send(args)


def cmd_events(args: argparse.Namespace) -> int:
    from shared.cli.events import events

    return events(args)


def cmd_validate(args: argparse.Namespace) -> int:
    from shared.cli.data import validate

    return validate(args)


def cmd_preview(args: argparse.Namespace) -> int:
    from shared.cli.data import preview

    return preview(args)


def cmd_sample(args: argparse.Namespace) -> int:
    from shared.cli.data import sample

    return sample(args)


def cmd_run(args: argparse.Namespace) -> int:
    from shared.cli.run import run

    return run(args)


def cmd_status(args: argparse.Namespace) -> int:
    if args.remote:
        return cmd_remote(args)
    from shared.cli.run import status

    return status(args.job)


def cmd_gc(args: argparse.Namespace) -> int:
    from shared.cli.gc import gc

    return gc(args.older_than, args.dry_run)


def cmd_remote(args: argparse.Namespace) -> int:
    from shared.cli.remote import command

    return command(args)


def cmd_teacher_serve(args: argparse.Namespace) -> int:
    from shared.local.model_server import serve

    return serve(args.model, args.port)


def cmd_ui(args: argparse.Namespace) -> int:
    from shared.dashboard.server import serve
    from shared.local.run import STORAGE_CONNECTION, home, is_running, open_store

    where = "the storage account of " + STORAGE_CONNECTION if os.environ.get(STORAGE_CONNECTION) else \
        str(home() / "storage")
    return serve(open_store(home()), where, args.port, is_running)


def count(text: str) -> int:
    """A whole number of at least 1 (argparse type): `--limit 0` or `--workers -2` are refused before any work."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


AGE_UNITS = {"m": 60, "h": 3600, "d": 86400}


def age(text: str) -> float:
    """Seconds in an age such as 30m, 12h or 7d (argparse type)."""
    match = re.fullmatch(r"(\d+)([mhd])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: give an age such as 30m, 12h or 7d")
    return int(match[1]) * AGE_UNITS[match[2]]


def add_run_options(r: argparse.ArgumentParser) -> None:
    r.add_argument("manifest", nargs="?", type=Path)
    r.add_argument("--task")
    r.add_argument("--train", type=Path)
    r.add_argument("--validation", type=Path)
    r.add_argument("--teacher", metavar="local[:MODEL] | test",
                   help=f"start a local teacher for the run (default model {TEACHER.name}), or the "
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
    r.add_argument("--limit", type=count, help="first N rows of each file")
    r.add_argument("--validation-fraction", type=float)
    r.add_argument("--no-finetune", action="store_true", help="stop when the dataset is assembled")
    r.add_argument("--no-cache", action="store_true")
    r.add_argument("--job", help="the job's id (default: derived from what determines its results)")
    r.add_argument("--restart", action="store_true", help="discard the job's earlier progress first")
    r.add_argument("--out", type=Path, help="copy the final files here")
    r.add_argument("--workers", type=count, default=4, help="shards labelled at once")
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
    pv.add_argument("--rows", type=count, default=3)
    pv.set_defaults(func=cmd_preview)

    r = sub.add_parser("run", help="run a job end to end on this machine")
    add_run_options(r)
    r.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="local job states (with --remote: the deployed app's)")
    st.add_argument("job", nargs="?")
    st.add_argument("--remote", action="store_true", help="the deployed app's jobs (storage account from the "
                    "environment)")
    st.set_defaults(func=cmd_status)
    se = sub.add_parser("send", help="hand one job request (start, cancel, resume) to the embedded jobs queue and "
                        "run the job until it ends")
    se.add_argument("message", type=Path, metavar="MESSAGE.json", help="the request's JSON body (- reads stdin)")
    se.add_argument("--workers", type=count, default=4, help="shards labelled at once")
    se.add_argument("--export-only", action="store_true", help="the fine-tune only exports the dataset")
    se.add_argument("--out", type=Path, help="copy the final files here")
    se.set_defaults(func=cmd_send)
    ev = sub.add_parser("events", help="the events a job published (all jobs' without JOB), one CloudEvent per line")
    ev.add_argument("job", nargs="?")
    ev.add_argument("--follow", action="store_true", help="keep printing new events (with JOB: until the job ends)")
    ev.add_argument("--remote", action="store_true", help="the deployed app's jobs (storage account from the "
                    "environment)")
    ev.set_defaults(func=cmd_events)
    g = sub.add_parser("gc", help="remove local jobs that ended long ago (never a running one)")
    g.add_argument("--older-than", type=age, default=age("7d"), metavar="AGE",
                   help="unchanged for at least this long: 30m, 12h, 7d (default 7d)")
    g.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    g.set_defaults(func=cmd_gc)
    ui = sub.add_parser("ui", help="the job dashboard for this machine's jobs, in a browser (on 127.0.0.1)")
    ui.add_argument("--port", type=int, default=8080, help="default 8080; 0 picks a free port")
    ui.set_defaults(func=cmd_ui)
    add_remote_commands(sub)

    t = sub.add_parser("teacher", help="the local teacher")
    serve = t.add_subparsers(dest="teacher_command", required=True).add_parser(
        "serve", help="serve a local model as an OpenAI-compatible endpoint on this machine (transformers serve)")
    serve.add_argument("--model", default=TEACHER.name,
                       help="a known model name, a Hugging Face folder or a .gguf file")
    serve.add_argument("--port", type=int, default=8000, help="on 127.0.0.1 (the server answers no one else)")
    serve.set_defaults(func=cmd_teacher_serve)

    s = sub.add_parser("sample", help="write the project's generated NLI sample data and a manifest")
    s.add_argument("--task", choices=["nli"], default="nli")
    s.add_argument("--rows", type=count, default=120)
    s.add_argument("--validation-rows", type=count, default=80)
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
    su.add_argument("--queue", action="store_true", help="start the job with a request on the app's jobs queue "
                    "(the Service Bus from the environment) instead of uploading the manifest")
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


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a service manager, a time limit): a command stops as Ctrl-C stops it, its job kept and the
    servers it started stopped."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    redaction.install(os.environ)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as exc:  # bad option values, a job already running: one clear line
        print(f"distill {args.command}: {redaction.redact(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the command could not use: which one, and why
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"distill {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        return 143 if isinstance(stop, Terminated) else 130
    finally:
        sys.stdout.flush()
