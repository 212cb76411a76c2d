"""SIGKILL during `distill run`, then the same command again: nothing lost, nothing repeated, no paid call twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.testkit.teacher import FakeTeacher, answers_from_jsonl


def test_a_killed_run_continues_without_losing_or_repeating_rows(shared_data: Path, tmp_path: Path) -> None:
    gold = shared_data / "gold" / "nlu_qa"
    answers = answers_from_jsonl(gold / "train.jsonl") | answers_from_jsonl(gold / "validation.jsonl")
    env = {**os.environ, "DISTILL_HOME": str(tmp_path)}
    with FakeTeacher(answers, latency=0.05) as teacher:
        argv = [sys.executable, "-m", "shared.cli", "run", "--task", "nlu_qa", "--train", str(gold / "train.jsonl"),
                "--validation", str(gold / "validation.jsonl"), "--teacher-url", teacher.base_url,
                "--teacher-model", "big", "--workers", "2", "--no-finetune", "--job", "killed"]
        results = tmp_path / "storage" / "jobs" / "killed" / "results"
        first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(list(results.glob("*.jsonl"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        finished = sorted(results.glob("*.jsonl"))
        assert 3 <= len(finished) < 16, "the run should be killed part way"
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    folder = tmp_path / "storage" / "jobs" / "killed"
    outputs = {name: (folder / name).read_text().splitlines() for name in
               ("train.jsonl", "validation.jsonl", "rejected.jsonl")}
    assert sum(len(rows) for rows in outputs.values()) == 768
    users = [json.loads(r)["messages"][1]["content"] for r in outputs["train.jsonl"] + outputs["validation.jsonl"]]
    assert len(set(users)) == len(users)
    for result in finished:
        shard = folder / "shards" / result.name
        for line in shard.read_text().splitlines():
            question = json.loads(line)["messages"][1]["content"]
            assert teacher.requests_by_key[question] == 1, "a finished shard's row was sent to the teacher again"
