"""Every command, given bad arguments or bad files, exits non-zero with a reason a user can act on, and no
traceback: each case runs `distill` in a fresh process, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.local.samples import nli_pairs, nli_row

CASES = {
    "validate a missing file": (["validate", "--task", "nli", "missing.jsonl"], "no such file"),
    "validate a folder": (["validate", "--task", "nli", "folder"], "a folder, not a JSONL file"),
    "validate a data asset": (["validate", "--task", "nli", "azureml:my-train:1"], "az ml data download"),
    "validate an unknown task": (["validate", "--task", "poetry", "train.jsonl"], "poetry"),
    "preview a missing manifest": (["preview", "missing.yaml"], "No such file"),
    "preview a manifest with a data asset": (["preview", "asset.yaml"], "az ml data download"),
    "run a missing file": (["run", "--task", "nli", "--train", "missing.jsonl", "--teacher", "test"],
                           "missing.jsonl: no such file"),
    "run a folder": (["run", "--task", "nli", "--train", "folder", "--teacher", "test"], "a folder"),
    "run a data asset": (["run", "--task", "nli", "--train", "azureml:my-train:1", "--teacher", "test"],
                         "az ml data download"),
    "run with --out naming a file": (["run", "--task", "nli", "--train", "train.jsonl", "--teacher", "test",
                                      "--out", "a-file"], "--out a-file: a file is there"),
    "run with DISTILL_HOME naming a file": (["run", "--task", "nli", "--train", "train.jsonl", "--teacher", "test"],
                                            "DISTILL_HOME"),
    "run with --limit 0": (["run", "--task", "nli", "--train", "train.jsonl", "--limit", "0"], "--limit"),
    "run with --workers -1": (["run", "--task", "nli", "--train", "train.jsonl", "--workers", "-1"], "--workers"),
    "run with --teacher-model alone": (["run", "--task", "nli", "--train", "train.jsonl", "--teacher-model", "m"],
                                       "--teacher-url"),
    "run with an unknown --teacher": (["run", "--task", "nli", "--train", "train.jsonl", "--teacher", "gpt"],
                                      "--teacher gpt"),
    "run with neither manifest nor data": (["run"], "give a MANIFEST"),
    "run with --rpm 0": (["run", "--task", "nli", "--train", "train.jsonl", "--rpm", "0"], "requests_per_minute"),
    "status of a bad job name": (["status", "../x"], "is not a job id"),
    "sample into a file": (["sample", "--out", "a-file"], "a-file"),
    "sample no rows": (["sample", "--rows", "0"], "--rows"),
    "serve a model that is not there": (["teacher", "serve", "--model", "no-such-model"], "no-such-model"),
    "submit without a storage account": (["submit", "asset.yaml"], "no storage account"),
    "watch without a storage account": (["watch", "job-1"], "no storage account"),
    "send a missing message": (["send", "missing.json"], "missing.json"),
    "send a message that is not JSON": (["send", "a-file"], "a-file:1:1: not JSON"),
    "send an unknown action": (["send", "launch.json"], "refused (unknown-action)"),
    "events of a bad job name": (["events", "../x"], "is not a job id"),
    "submit to a queue without a Service Bus": (["submit", "asset.yaml", "--queue"], "no Service Bus namespace"),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad-input")
    (folder / "folder").mkdir()
    (folder / "a-file").write_text("not a folder\n")
    pairs = nli_pairs(seed=5)
    (folder / "train.jsonl").write_text("".join(json.dumps(nli_row(*next(pairs))) + "\n" for _ in range(80)))
    (folder / "asset.yaml").write_text("task: nli\ntraining_file: azureml:my-train:1\n")
    (folder / "launch.json").write_text('{"version": 1, "action": "launch", "job": "j"}')
    return folder


def attempt(argv: list[str], reason: str, home: Path, workdir: Path) -> str | None:
    """Run `distill` with bad input in a fresh process: what is wrong with how it answered, or None."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILL", "DistillStorage"))}
    env["DISTILL_HOME"] = str(home)
    done = subprocess.run([sys.executable, "-m", "shared.cli", *argv], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=120)
    output = done.stdout + done.stderr
    if "Traceback" in output:
        return f"a traceback: {output}"
    if done.returncode == 0:
        return f"exit 0: {output}"
    return None if reason in output else f"no {reason!r} in: {output}"


def test_every_command_given_bad_input_exits_non_zero_with_one_clear_reason(workdir: Path, figures) -> None:
    def one(case: str) -> str | None:
        argv, reason = CASES[case]
        return attempt(argv, reason, workdir / ("a-file" if "DISTILL_HOME" in case else "home"), workdir)

    with ThreadPoolExecutor(2) as pool:
        problems = {case: problem for case, problem in zip(CASES, pool.map(one, CASES), strict=True) if problem}
    assert problems == {}
    assert not (workdir / "home" / "storage").exists(), "a refused command started a job"
    figures.record("hostile inputs: every command's bad arguments and files", hostile_inputs=len(CASES))


def test_validation_comes_first_and_names_the_users_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from shared.cli import main

    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    pairs = nli_pairs(seed=6)
    rows = [json.dumps(nli_row(*next(pairs))) for _ in range(80)]
    bom = tmp_path / "my-pairs.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode() + b"\n")
    assert main(["validate", "--task", "nli", str(bom)]) == 0
    assert main(["run", "--task", "nli", "--train", str(bom), "--teacher", "test", "--no-finetune"]) == 0
    broken = tmp_path / "broken-pairs.jsonl"
    broken.write_text("\n".join([*rows[:40], "{not json", *rows[40:]]) + "\n")
    capsys.readouterr()
    assert main(["run", "--task", "nli", "--train", str(broken), "--teacher", "test", "--no-finetune"]) == 1
    out = capsys.readouterr()
    assert "broken-pairs.jsonl:41: json" in out.out + out.err and "Traceback" not in out.out + out.err


def test_status_tells_an_interrupted_job_from_a_running_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from shared.cli import main
    from shared.local.run import job_lock

    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    status = tmp_path / "home" / "storage" / "jobs" / "job-1" / "status.json"
    status.parent.mkdir(parents=True)
    status.write_text(json.dumps({"job": "job-1", "state": "fine-tuning", "created": "2026-11-30T00:00:00Z"}))
    assert main(["status", "job-1"]) == 0
    assert "interrupted: no `distill run` is running it" in capsys.readouterr().out
    assert main(["status"]) == 0
    assert capsys.readouterr().out == "job-1\tfine-tuning (interrupted)\n"
    with job_lock(tmp_path / "home" / "locks" / "job-1.lock"):  # a run holds it
        assert main(["status"]) == 0
        assert capsys.readouterr().out == "job-1\tfine-tuning\n"


def test_gc_removes_only_jobs_that_ended_long_ago_and_no_run_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from shared.cli import main
    from shared.local.run import job_lock

    home = tmp_path / "home"
    monkeypatch.setenv("DISTILL_HOME", str(home))
    week_ago = time.time() - 8 * 86400
    for job, state, old in [("old-done", "succeeded", True), ("new-done", "failed", False),
                            ("old-stuck", "labeling", True), ("old-held", "dataset ready", True)]:
        status = home / "storage" / "jobs" / job / "status.json"
        status.parent.mkdir(parents=True)
        status.write_text(json.dumps({"job": job, "state": state, "created": "2026-11-01T00:00:00Z"}))
        (home / "storage" / "input" / job).mkdir(parents=True)
        (home / "storage" / "input" / job / "train.jsonl").write_text("{}\n")
        if old:
            os.utime(status, (week_ago, week_ago))
    with job_lock(home / "locks" / "old-held.lock"):
        assert main(["gc", "--dry-run"]) == 0
        assert capsys.readouterr().out.startswith("would remove old-done (succeeded")
        assert (home / "storage" / "jobs" / "old-done").exists()
        assert main(["gc"]) == 0
    left = sorted(p.name for p in (home / "storage" / "jobs").iterdir())
    assert left == ["new-done", "old-held", "old-stuck"]
    assert not (home / "storage" / "input" / "old-done").exists()
    assert main(["gc", "--older-than", "1d"]) == 0  # no longer held: it goes too
    assert sorted(p.name for p in (home / "storage" / "jobs").iterdir()) == ["new-done", "old-stuck"]
