"""What a broken or hostile teacher cannot do: spend past the budget with made-up usage, leak the key through its
replies, flood memory with a huge reply, or hold a request past its deadline by sending slowly. And counts a user
gives out of range are refused before any work.

Each runs over real HTTP against tests.hostile_teacher, through the real openai client (and `distill run` where the
effect is on a job)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hostile_teacher import HostileTeacher, Reply, completion
from reliability_helpers import tally

from shared.cli import main
from shared.cli.show import summary
from shared.jobs.record import JobRecord
from shared.jobs.stage import progress_line
from shared.local.samples import nli_pairs, nli_row
from shared.manifest.model import InferenceParameters, TeacherKind, TeacherSettings
from shared.reasons import Reason
from shared.storage.local import LocalBlobStore
from shared.teacher.factory import teacher_for
from shared.teacher.replies import TeacherCallFailed, TeacherReply
from shared.teacher.retry import RetryPolicy

MESSAGES = [{"role": "user", "content": "Premise: it rains. Hypothesis: the street is wet. One word."}]
KEY = "sk-hostile-5f2c9a7e1b3d"


def ask(url: str, *, timeout: float = 5.0, max_tokens: int = 16, environ: dict[str, str] | None = None,
        key_setting: str | None = None) -> TeacherReply:
    settings = TeacherSettings(kind=TeacherKind.OPENAI_COMPATIBLE, url=url, timeout_seconds=timeout,
                               key_setting=key_setting)

    async def call() -> TeacherReply:
        async with teacher_for(settings, InferenceParameters(max_tokens=max_tokens),
                               retry=RetryPolicy(max_retries=0), environ=environ or {}) as teacher:
            return await teacher.complete(MESSAGES)

    return asyncio.run(call())


def counted(home: Path, job: str, train: Path) -> dict[str, int]:
    """The reliability suite's row counts for a local job labelled from `train`."""
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    return tally(LocalBlobStore(home / "storage"), job, {train.name: rows})


def nli_file(path: Path, rows: int) -> Path:
    pairs = nli_pairs(seed=3)
    path.write_text("".join(json.dumps({"messages": nli_row(*next(pairs))["messages"][:2]}) + "\n"
                            for _ in range(rows)))
    return path


@pytest.mark.parametrize("usage", [(-100_000, -100_000), (None, None), (10**15, 10**15), (0, 0)])
def test_missing_negative_or_absurd_usage_is_replaced_by_an_estimate(usage: tuple[int | None, int | None]) -> None:
    with HostileTeacher(lambda body, key: Reply(completion("entailment", *usage))) as teacher:
        reply = ask(teacher.base_url)
    chars = len(MESSAGES[0]["content"])
    assert chars // 4 <= reply.usage.prompt_tokens <= chars
    assert 1 <= reply.usage.completion_tokens <= 16


def test_plausible_usage_is_kept_as_reported() -> None:
    with HostileTeacher(lambda body, key: Reply(completion("entailment", 21, 3))) as teacher:
        assert ask(teacher.base_url).usage.total == 24


def test_negative_usage_cannot_spend_past_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], figures) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    train = nli_file(tmp_path / "train.jsonl", 200)
    with HostileTeacher(lambda body, key: Reply(completion("entailment", -100_000, -100_000))) as teacher:
        main(["run", "--task", "nli", "--train", str(train), "--teacher-url", teacher.base_url,
              "--teacher-model", "m", "--budget-tokens", "1000", "--workers", "1", "--no-finetune", "--job", "usage"])
    capsys.readouterr()
    # every row costs at least its estimate (~40 tokens): 1,000 tokens buy about 25, plus the requests in flight
    assert teacher.requests <= 25 + 10, teacher.requests
    status = json.loads(next((tmp_path / "home").rglob("status.json")).read_text())
    assert status["tokens"]["prompt"] > 0 and status["tokens"]["completion"] > 0
    figures.record("hostile teacher: negative usage against a budget", faults_injected=1,
                   **counted(tmp_path / "home", "usage", train))


def test_a_key_echoed_by_the_teacher_is_stored_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], figures) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOSTILE_KEY", KEY)
    storage_key = "c3RvcmFnZS1rZXktaG9zdGlsZQ=="  # another configured secret, which this teacher somehow knows
    monkeypatch.setenv("DistillStorage", f"AccountName=a;AccountKey={storage_key};EndpointSuffix=x")
    train = nli_file(tmp_path / "train.jsonl", 70)

    def echo(body: dict[str, Any], key: str | None) -> Reply:  # half the rows usable, half rejected
        said = f"{key} {storage_key}"
        return Reply(completion(f"entailment {said}" if len(body["messages"][-1]["content"]) % 2 else said))

    with HostileTeacher(echo) as teacher:
        main(["run", "--task", "nli", "--train", str(train), "--teacher-url", teacher.base_url,
              "--teacher-model", "m", "--teacher-key-env", "HOSTILE_KEY", "--no-finetune", "--job", "echo"])
    out = capsys.readouterr()
    assert teacher.requests == 70, out.err
    assert KEY not in out.out + out.err and storage_key not in out.out + out.err
    stored = [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert stored and not [p for p in stored if any(s.encode() in p.read_bytes() for s in (KEY, storage_key))]
    figures.record("hostile teacher: echoes the configured secrets", faults_injected=2,
                   **counted(tmp_path / "home", "echo", train))


def test_a_huge_reply_is_refused_as_oversized_without_reading_it_whole(figures) -> None:
    huge = completion("entailment " * 2_000_000)
    with HostileTeacher(lambda body, key: Reply(huge)) as teacher, pytest.raises(TeacherCallFailed) as caught:
        ask(teacher.base_url, max_tokens=16)
    assert caught.value.reason is Reason.OVERSIZED
    assert "max_tokens 16" in caught.value.detail
    figures.record("hostile teacher: a 20 MB reply", faults_injected=1)


def test_a_long_reply_that_max_tokens_allows_is_read() -> None:
    text = "word " * 3000  # about 3,000 tokens
    with HostileTeacher(lambda body, key: Reply(completion(text, 10, 3000))) as teacher:
        assert ask(teacher.base_url, max_tokens=4096).content == text


def test_the_timeout_is_a_deadline_for_a_teacher_that_drips_its_reply(figures) -> None:
    with HostileTeacher(lambda body, key: Reply(completion("entailment"), drip_seconds=0.1)) as teacher:
        started = time.monotonic()
        with pytest.raises(TeacherCallFailed) as caught:
            ask(teacher.base_url, timeout=2.0)
        took = time.monotonic() - started
    assert caught.value.reason is Reason.TIMEOUT
    assert 2.0 <= took <= 2.2, took  # the deadline holds within 10%
    figures.record("hostile teacher: drips its reply past the deadline", faults_injected=1)


@pytest.mark.parametrize("flag", ["--limit", "--workers"])
@pytest.mark.parametrize("value", ["0", "-5", "two"])
def test_out_of_range_counts_are_refused_before_any_work(flag: str, value: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    train = nli_file(tmp_path / "train.jsonl", 5)
    with pytest.raises(SystemExit) as exited:
        main(["run", "--task", "nli", "--train", str(train), "--teacher", "test", flag, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}:" in err and "Traceback" not in err
    assert not (tmp_path / "home").exists()


def test_unusable_replies_are_not_replayed_from_the_cache_after_the_teacher_is_fixed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], figures) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    train = nli_file(tmp_path / "train.jsonl", 80)
    answer = {"text": "banana"}  # not a label: every row rejected
    with HostileTeacher(lambda body, key: Reply(completion(answer["text"]))) as teacher:
        argv = ["run", "--task", "nli", "--train", str(train), "--teacher-url", teacher.base_url,
                "--teacher-model", "m", "--no-finetune", "--job", "fixed-teacher"]
        assert main(argv) == 1
        assert teacher.requests == 80
        capsys.readouterr()
        answer["text"] = "entailment"
        assert main(argv) == 1  # without --restart: the ended job, and how to run it again
        assert "--restart" in capsys.readouterr().err and teacher.requests == 80
        assert main([*argv, "--restart"]) == 0
        assert teacher.requests == 160  # every row asked again, none replayed from the cache
        assert main([*argv, "--restart"]) == 0
        assert teacher.requests == 160  # good replies are kept
    capsys.readouterr()
    figures.record("hostile teacher: garbage, then fixed (--restart)", faults_injected=80,
                   **counted(tmp_path / "home", "fixed-teacher", train))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


def test_a_run_against_a_dead_teacher_fails_at_once_with_one_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str], figures) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    train = nli_file(tmp_path / "train.jsonl", 200)
    started = time.monotonic()
    code = main(["run", "--task", "nli", "--train", str(train), "--teacher-url",
                 f"http://127.0.0.1:{closed_port()}/v1", "--teacher-model", "m", "--no-finetune"])
    took = time.monotonic() - started
    out = capsys.readouterr().out
    assert code == 1 and took < 30, took
    assert "teacher: the teacher at http://127.0.0.1:" in out and "cannot be reached" in out
    assert "rejected" not in out  # no row was tried
    figures.record("teacher unusable: nothing listens at its URL", faults_injected=1)


def test_a_missing_key_is_named_by_the_flag_before_any_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str], figures) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    train = nli_file(tmp_path / "train.jsonl", 80)
    with HostileTeacher(lambda body, key: Reply(completion("entailment"))) as teacher:
        code = main(["run", "--task", "nli", "--train", str(train), "--teacher-url", teacher.base_url,
                     "--teacher-model", "m", "--teacher-key-env", "NO_SUCH_KEY_VAR", "--no-finetune"])
    out = capsys.readouterr().out
    assert code == 1 and teacher.requests == 0
    assert "'NO_SUCH_KEY_VAR' (--teacher-key-env" in out
    figures.record("teacher unusable: its key is not set", faults_injected=1)


def test_a_teacher_that_refuses_the_key_fails_the_job_before_any_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], figures) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOSTILE_KEY", "sk-wrong-key-0000")
    train = nli_file(tmp_path / "train.jsonl", 80)
    refused = Reply({"error": {"message": "invalid key"}}, status=401)
    with HostileTeacher(lambda body, key: Reply(completion("entailment")), models=refused) as teacher:
        code = main(["run", "--task", "nli", "--train", str(train), "--teacher-url", teacher.base_url,
                     "--teacher-model", "m", "--teacher-key-env", "HOSTILE_KEY", "--no-finetune"])
    out = capsys.readouterr().out
    assert code == 1 and teacher.requests == 0 and "refused the credentials (HTTP 401)" in out
    figures.record("teacher unusable: it refuses the key", faults_injected=1)


def test_a_reused_job_name_with_other_inputs_is_refused(shared_data: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], figures) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    train = nli_file(tmp_path / "train.jsonl", 80)
    assert main(["run", "--task", "nli", "--train", str(train), "--teacher", "test", "--no-finetune",
                 "--job", "reuse1"]) == 0
    math = shared_data / "gold" / "math"
    capsys.readouterr()
    assert main(["run", "--task", "math", "--train", str(math / "train.jsonl"), "--validation",
                 str(math / "validation.jsonl"), "--teacher", "test", "--no-finetune", "--job", "reuse1",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "job reuse1 was started with other data, task" in err and "--restart" in err
    assert not (tmp_path / "b").exists()
    assert main(["run", "--task", "nli", "--train", str(train), "--teacher", "test", "--no-finetune",
                 "--job", "reuse1", "--chain-of-thought"]) == 2
    assert "prompt.chain_of_thought" in capsys.readouterr().err
    assert main(["run", "--task", "nli", "--train", str(train), "--teacher", "test", "--no-finetune",
                 "--job", "reuse1", "--workers", "2"]) == 0  # what does not change results may differ
    capsys.readouterr()
    figures.record("hostile inputs: a job name reused for other data or settings", hostile_inputs=2,
                   **counted(tmp_path / "home", "reuse1", train))


def test_a_continued_job_uses_the_corrected_teacher_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], figures) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    train = nli_file(tmp_path / "train.jsonl", 200)
    answer = lambda body, key: Reply(completion("entailment", 10, 2))  # noqa: E731
    with HostileTeacher(answer) as first, HostileTeacher(answer) as second:
        argv = ["run", "--task", "nli", "--train", str(train), "--teacher-model", "m", "--no-finetune",
                "--job", "moved", "--workers", "1"]
        assert main([*argv, "--teacher-url", first.base_url, "--budget-tokens", "600"]) == 1  # budget spent
        sent = first.requests
        assert 0 < sent < 200
        assert main([*argv, "--teacher-url", second.base_url, "--budget-tokens", "100000"]) == 0
    assert first.requests == sent and second.requests == 200 - sent
    capsys.readouterr()
    figures.record("teacher moved between runs (a corrected --teacher-url)", faults_injected=1,
                   **counted(tmp_path / "home", "moved", train))


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "kill"])
def test_ctrl_c_stops_a_run_whose_teacher_hangs_and_the_rerun_loses_nothing(tmp_path: Path, figures, stop: int,
                                                                           code: int) -> None:
    train = nli_file(tmp_path / "train.jsonl", 100)
    hang = {"seconds": 120.0}

    def answer(body: dict[str, Any], key: str | None) -> Reply:
        time.sleep(hang["seconds"])  # a teacher that accepts the request and does not answer
        return Reply(completion("entailment"))

    env = {**os.environ, "DISTILL_HOME": str(tmp_path / "home")}
    with HostileTeacher(answer) as teacher:
        argv = [sys.executable, "-m", "shared.cli", "run", "--task", "nli", "--train", str(train), "--teacher-url",
                teacher.base_url, "--teacher-model", "m", "--no-finetune", "--job", "hung", "--workers", "2"]
        run = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while teacher.requests < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert teacher.requests >= 4, "the run never reached the teacher"
        run.send_signal(stop)
        started = time.monotonic()
        _, err = run.communicate(timeout=30)
        took = time.monotonic() - started
        assert took < 10, took
        assert run.returncode == code and "stopping:" in err and "Traceback" not in err
        hang["seconds"] = 0.0
        again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    counts = counted(tmp_path / "home", "hung", train)
    assert counts == {"rows_processed": 100, "rows_lost": 0, "rows_duplicated": 0}
    assert not (tmp_path / "home" / "storage" / "jobs" / "hung" / "rejected.jsonl").read_text().strip()
    how = "Ctrl-C" if stop == signal.SIGINT else "SIGTERM"
    figures.record(f"hostile teacher: hangs ({how}, then the rerun)", faults_injected=1, **counts)


def test_a_long_wait_for_the_teacher_shows_in_the_progress_line_and_in_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], figures) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    train = nli_file(tmp_path / "train.jsonl", 80)
    status = tmp_path / "home" / "storage" / "jobs" / "waits" / "status.json"
    seen: dict[str, Any] = {}

    def slow_down(body: dict[str, Any], key: str | None) -> Reply:
        if not seen:  # the first call is told to come back in 6 s
            seen["asked"] = time.time()
            return Reply({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "6"})
        if "waiting" in (doc := json.loads(status.read_text())):  # what `distill status` reads during the wait
            seen.setdefault("record", doc)
        return Reply(completion("entailment"))

    with HostileTeacher(slow_down) as teacher:
        assert main(["run", "--task", "nli", "--train", str(train), "--teacher-url", teacher.base_url,
                     "--teacher-model", "m", "--no-finetune", "--workers", "1", "--rpm", "6000",
                     "--job", "waits"]) == 0
    assert "waiting 6s for the teacher's rate limit" in capsys.readouterr().err
    assert "record" in seen, "the wait never showed in status.json"
    record = JobRecord.from_json(seen["record"])
    assert record.waiting and record.waiting["why"] == "the teacher's rate limit"
    assert abs(record.waiting["until"] - seen["asked"] - 6) < 1
    record.waiting["until"] = time.time() + 40.4  # as `distill status` shows it while the wait lasts
    assert "waiting 40s for the teacher's rate limit" in progress_line(record)
    assert "  waiting 40s for the teacher's rate limit\n" in summary(record, "folder")
    assert "waiting" not in json.loads(status.read_text())  # gone once labelling is over
    figures.record("hostile teacher: a 429 with Retry-After (the wait shown)", faults_injected=1,
                   **counted(tmp_path / "home", "waits", train))
