"""Delivery faults on the embedded queue with the real handlers: a killed worker, duplicates, out-of-order
completions, duplicate and late Event Grid events, a crash before the fine-tune starts, storage write conflicts,
and a poison message. One dataset and one fine-tune per job; no row lost or duplicated."""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from reliability_helpers import jsonl, put_job, qa_manifest, qa_rows, qa_teacher, tally
from test_local_queue import FakeClock
from test_pipeline import WORKSPACE, RecordingFineTuner, run_event

from shared.jobs.blobs import read_json
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobState
from shared.jobs.shards import decode_shard
from shared.local.runtime import LocalRuntime
from shared.pipeline.aggregate import on_completion
from shared.pipeline.ingest import ingest
from shared.pipeline.label import label_shard
from shared.pipeline.run_events import on_run_event
from shared.queueing.local import LocalQueue, ReceivedMessage
from shared.services import Services
from shared.settings import Settings
from shared.storage.local import LocalBlobStore

JOB = "deliveries"
STATUS = f"jobs/{JOB}/status.json"


class Killed(Exception):
    """The worker process died here."""


class FaultyStore(LocalBlobStore):
    """A local store where another writer gets in first, and where a worker dies before its result is written."""

    def __init__(self, root: Path, *, conflicts: int, kill_before: str) -> None:
        super().__init__(root)
        self.conflicts_left = conflicts
        self.conflicts = 0
        self.kill_before = kill_before
        self.lock = threading.Lock()

    def write(self, path: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        with self.lock:
            interfere = path == STATUS and if_match is not None and self.conflicts_left > 0
            kill = path == self.kill_before
            if interfere:
                self.conflicts_left -= 1
                self.conflicts += 1
            if kill:
                self.kill_before = ""
        if interfere:  # a concurrent writer replaces the record between our read and our write: a real CAS loss
            current = super().read(path)
            super().write(path, current.data)
        if kill:
            raise Killed(path)
        return super().write(path, data, if_match=if_match, if_absent=if_absent)


class CrashingFineTuner(RecordingFineTuner):
    """Crashes once between "all shards in" and "fine-tune started", then starts runs normally."""

    def __init__(self) -> None:
        super().__init__()
        self.crashed = 0

    def start(self, request):
        if not self.crashed:
            self.crashed += 1
            raise Killed("before the fine-tune started")
        return super().start(request)


def settle_all(queue: LocalQueue, name: str, handle, *, order=None) -> int:
    """Receive everything on a queue, handle it (in `order`), complete what succeeded; returns the failures."""
    messages: list[ReceivedMessage] = []
    while batch := queue.receive(name, 50):
        messages += batch
    failed = 0
    for message in (order or list)(messages):
        try:
            handle(message.body)
        except Killed:
            failed += 1  # never settled: the lock expires and the message comes back
            continue
        queue.complete(message)
    return failed


def test_delivery_faults_leave_one_dataset_and_one_finetune(tmp_path: Path, figures) -> None:
    train, answers = qa_rows(60, "T")
    validation, more = qa_rows(20, "V")
    clock = FakeClock()
    store = FaultyStore(tmp_path / "storage", conflicts=12, kill_before=f"jobs/{JOB}/results/00002.jsonl")
    faults = 0
    with qa_teacher(answers | more) as teacher, \
            LocalQueue(tmp_path / "q.db", lock_seconds=30, max_delivery_count=5, clock=clock) as queue:
        finetuner = CrashingFineTuner()
        services = Services(store=store, queue=queue, finetuner=finetuner,
                            settings=Settings(shard_rows=10, workspace_topic=WORKSPACE))
        # the evaluation's own repeats and crashes are tests/test_evaluate_step.py's
        put_job(store, JOB, qa_manifest(teacher.base_url, finetune=True, evaluation={"deploy": "none"}),
                {"train.jsonl": jsonl(train), "validation.jsonl": jsonl(validation)})
        for _ in range(3):  # the BlobCreated event, twice repeated
            assert ingest(services, f"input/{JOB}/manifest.json") == JOB
        faults += 2
        assert queue.counts("shards")["active"] == 8

        # shards out of order; the worker labelling shard 2 dies after its teacher calls, before writing the result
        shard_bodies: list[dict[str, Any]] = []

        def label(body: dict[str, Any]) -> None:
            shard_bodies.append(body)
            label_shard(services, body)

        assert settle_all(queue, "shards", label, order=reversed) == 1
        faults += 2  # the kill, and the out-of-order deliveries
        label_shard(services, shard_bodies[0])  # a repeated delivery of a finished shard (its lock was lost)
        faults += 1
        clock.advance(31)  # the dead worker's lock expires: shard 2 comes back
        [back] = queue.receive("shards", 5)
        assert (back.body["shard"], back.delivery_count) == (2, 2)
        label_shard(services, back.body)
        queue.complete(back)
        faults += 1

        # every completion twice, shuffled, handled concurrently; the first to reach the fine-tune crashes there
        completions: list[ReceivedMessage] = []
        while batch := queue.receive("completions", 50):
            completions += batch
        assert len(completions) == 8  # the repeated shard's completion had the same id: dropped by the queue
        bodies = [m.body for m in completions] * 2
        random.Random(5).shuffle(bodies)
        faults += len(completions) + 1
        errors: list[BaseException] = []

        def complete(body: dict[str, Any]) -> None:
            try:
                on_completion(services, body)
            except Killed as exc:
                errors.append(exc)

        threads = [threading.Thread(target=complete, args=(body,)) for body in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(errors) == 1 and finetuner.crashed == 1
        faults += 1
        for message in completions:
            queue.complete(message)
        record = read_json(store, JobPaths("jobs", JOB).status)
        assert record["state"] == JobState.FINE_TUNING and not record["finetune"]["started"]
        services.settings = replace(services.settings, finetune_claim_seconds=0)  # the crashed claim goes stale
        on_completion(services, completions[0].body)  # the crashed handler's message, redelivered
        assert finetuner.starts == {f"{JOB}-ft": 1}

        # run events: a foreign workspace's, the real one twice, then a late contrary one
        assert on_run_event(services, run_event("Completed", topic=WORKSPACE + "x", job=JOB, run=f"{JOB}-ft")) is None
        for _ in range(2):
            on_run_event(services, run_event("Completed", job=JOB, run=f"{JOB}-ft"))
        on_run_event(services, run_event("Failed", job=JOB, run=f"{JOB}-ft"))
        faults += 3
        assert ingest(services, f"input/{JOB}/manifest.json") == JOB  # a very late BlobCreated
        faults += 1

    record = read_json(store, JobPaths("jobs", JOB).status)
    assert record["state"] == JobState.SUCCEEDED and record["errors"] == []
    assert record["accepted"] == {"train": 60, "validation": 20} and record["rejected"] == 0
    assert finetuner.starts == {f"{JOB}-ft": 1}
    assert queue_is_empty(tmp_path / "q.db")
    shard_two = {row.messages[1]["content"]
                 for _, row in decode_shard(store.read(f"jobs/{JOB}/shards/00002.jsonl").data)}
    assert len(shard_two) == 10  # the killed worker's calls were paid; the redelivery read them from the cache
    assert len(teacher.requests_by_key) == 80 and set(teacher.requests_by_key.values()) == {1}
    assert record["cache"]["hits"] == 10
    assert store.conflicts == 12
    faults += store.conflicts
    counts = tally(store, JOB, {"train.jsonl": train, "validation.jsonl": validation})
    assert counts == {"rows_processed": 80, "rows_lost": 0, "rows_duplicated": 0}
    figures.record("delivery faults", faults_injected=faults, **counts)


def queue_is_empty(path: Path) -> bool:
    with LocalQueue(path) as queue:
        return queue.idle(["shards", "completions"]) and not queue.dead_letters("shards")


def test_a_poison_message_is_dead_lettered_and_fails_its_job(tmp_path: Path, figures) -> None:
    train, answers = qa_rows(60, "T")
    validation, more = qa_rows(20, "V")
    store = LocalBlobStore(tmp_path / "storage")
    with qa_teacher(answers | more) as teacher:
        put_job(store, "poison", qa_manifest(teacher.base_url),
                {"train.jsonl": jsonl(train), "validation.jsonl": jsonl(validation)})
        runtime = LocalRuntime(store, tmp_path / "q.db", environ={}, workers=2)  # 50 rows a shard: shards 0 and 1
        try:
            runtime.blob_created("input/poison/manifest.json")
            store.write("jobs/poison/shards/00001.jsonl", b"\xff\xfe not a shard\n")  # every delivery fails
            runtime.drain(lambda: JobState(read_json(store, JobPaths("jobs", "poison").status)["state"]).final)
            [letter] = runtime.queue.dead_letters("shards")
        finally:
            runtime.close()
    record = read_json(store, JobPaths("jobs", "poison").status)
    assert record["state"] == JobState.FAILED
    assert (letter.body, letter.delivery_count) == ({"job": "poison", "shard": 1}, 5)
    assert letter.reason == "MaxDeliveryCountExceeded"
    [error] = record["errors"]
    assert error.startswith("shard 1 was dead-lettered after 5 deliveries (MaxDeliveryCountExceeded: "
                            "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff"), error
    assert all(n == 1 for n in teacher.requests_by_key.values())
    figures.record("poison message", faults_injected=1, crashes=0)
