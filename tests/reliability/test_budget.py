"""The token budget: teacher calls stop once it is spent, the job says so and keeps what was done, and the same command
with a raised budget goes on without repeating a paid call. Spent tokens count each row once, whatever the workers
and deliveries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reliability_helpers import jsonl, put_job, qa_manifest, qa_rows, qa_teacher, run_job, tally, user_of
from test_delivery_faults import FaultyStore

from shared.cli import main
from shared.jobs.blobs import read_json
from shared.jobs.paths import JobPaths
from shared.pipeline.budget import spent
from shared.pipeline.label import label_shard
from shared.services import Services
from shared.settings import Settings
from shared.storage.local import LocalBlobStore


def results_tokens(store, job: str) -> dict[str, int]:
    """Tokens per shard, as the shard results count them."""
    tokens = {}
    for path in store.list(f"jobs/{job}/results/"):
        header = json.loads(store.read(path).data.split(b"\n", 1)[0])
        tokens[str(int(path.rsplit("/", 1)[1].split(".")[0]))] = header["prompt_tokens"] + header["completion_tokens"]
    return tokens


def test_the_budget_stops_the_job_and_a_raised_budget_continues_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   figures) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    train, answers = qa_rows(30, "T")
    validation, more = qa_rows(10, "V")
    (tmp_path / "train.jsonl").write_bytes(jsonl(train))
    (tmp_path / "validation.jsonl").write_bytes(jsonl(validation))
    with qa_teacher(answers | more) as teacher:
        manifest = qa_manifest(teacher.base_url, limits={"concurrency": 1})
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
        argv = ["run", str(tmp_path / "manifest.json"), "--job", "budget", "--workers", "1"]

        assert main([*argv, "--budget-tokens", "600"]) == 1
        first = capsys.readouterr().out
        record = json.loads((tmp_path / "home/storage/jobs/budget/status.json").read_text())
        paid = teacher.requests_total
        tokens = record["tokens"]["prompt"] + record["tokens"]["completion"]
        per_row = tokens / paid
        assert record["state"] == "budget spent", record
        assert 600 <= tokens < 600 + per_row + 5  # the row that crossed the budget was the last one sent
        assert record["budget"] == {"tokens": 600, "spent": tokens, "rows_not_sent": 40 - paid}
        assert record["accepted"]["train"] + record["accepted"]["validation"] == paid
        assert record["rejected_by_reason"] == {"budget": 40 - paid}
        assert "job budget: budget spent" in first
        assert (f"stopped: token budget of 600 spent ({tokens:,} tokens used); {40 - paid} rows were not sent to the "
                "teacher. Run again with a higher --budget-tokens") in first
        assert main(["status", "budget"]) == 0
        assert "budget spent" in capsys.readouterr().out

        assert main([*argv, "--budget-tokens", "600"]) == 1  # the same budget: nothing more is sent
        assert teacher.requests_total == paid

        assert main([*argv, "--budget-tokens", "100000"]) == 0
        assert "dataset ready" in capsys.readouterr().out
        assert all(teacher.requests_by_key[user_of(row)] == 1 for row in train + validation)
        assert teacher.requests_total == 40
    record = json.loads((tmp_path / "home/storage/jobs/budget/status.json").read_text())
    assert record["state"] == "dataset ready" and record["accepted"] == {"train": 30, "validation": 10}
    assert record["rejected"] == 0 and "reason" not in record
    store = LocalBlobStore(tmp_path / "home/storage")
    assert spent(store, JobPaths("jobs", "budget")) == record["tokens"]["prompt"] + record["tokens"]["completion"]
    counts = tally(store, "budget", {"train.jsonl": train, "validation.jsonl": validation})
    assert counts == {"rows_processed": 40, "rows_lost": 0, "rows_duplicated": 0}
    figures.record("budget: stop, then continue", **counts)


def test_spent_tokens_count_each_row_once_across_workers_and_redeliveries(tmp_path: Path, figures) -> None:
    train, answers = qa_rows(160, "T")
    validation, more = qa_rows(40, "V")
    store = FaultyStore(tmp_path / "storage", conflicts=0, kill_before="jobs/shared-budget/results/00001.jsonl")
    with qa_teacher(answers | more, latency=0.3) as teacher:  # a call takes far longer than a ledger update
        put_job(store, "shared-budget", qa_manifest(teacher.base_url, limits={"budget_tokens": 5000}),
                {"train.jsonl": jsonl(train), "validation.jsonl": jsonl(validation)})
        record = run_job(store, tmp_path / "q.db", "shared-budget", environ={}, workers=4)
        services = Services(store=store, queue=_NoQueue(), finetuner=None, settings=Settings())
        label_shard(services, {"job": "shared-budget", "shard": 2})  # a late duplicate of a finished shard
    paths = JobPaths("jobs", "shared-budget")
    assert record["state"] == "budget spent", record
    ledger = read_json(store, paths.file("budget.json"))["shards"]
    results = results_tokens(store, "shared-budget")
    assert {k: v for k, v in ledger.items() if k != "1"} == {k: v for k, v in results.items() if k != "1"}
    # shard 1: its killed worker's paid rows, and its redelivery's, each row once
    shard_one = {json.loads(line)["messages"][1]["content"] for line in store.read(paths.shard(1)).data.splitlines()}
    asked = {key for key in shard_one if teacher.requests_by_key[key]}
    rows_one = read_json(store, paths.file("budget/00001.json"))["rows"]
    assert len(rows_one) == len(asked) > 0 and ledger["1"] == sum(rows_one.values()) >= results["1"]
    used = sum(ledger.values())
    assert record["budget"]["spent"] == used
    per_row = max(rows_one.values())
    in_flight = 4 * 10 * per_row  # workers x concurrency
    killed = 10 * per_row  # the killed delivery's calls were paid, and its redelivery had its own in flight
    # the calls in flight, what went out before the ledger caught up, and the killed delivery's
    assert 5000 <= used <= 5000 + 2 * in_flight + killed
    counts = tally(store, "shared-budget", {"train.jsonl": train, "validation.jsonl": validation})
    assert counts == {"rows_processed": 200, "rows_lost": 0, "rows_duplicated": 0}
    repeated = {key for key, n in teacher.requests_by_key.items() if n > 1}
    assert repeated <= shard_one  # only the killed worker's paid calls were made again
    figures.record("budget: 4 workers, a killed worker, a duplicate", faults_injected=2, **counts)


class _NoQueue:
    def send(self, queue: str, messages) -> None:
        pass
