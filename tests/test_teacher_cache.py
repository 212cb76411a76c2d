"""The response cache, throttled shards and batch mode, through the real label and aggregate handlers over HTTP.

Batch mode runs against the test teacher's Files and Batch API."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_pipeline import RecordingFineTuner, drain

from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.jobs.shards import decode_shard
from shared.local.samples import write_nli_sample
from shared.manifest.model import TeacherKind, TeacherSettings
from shared.pipeline.aggregate import on_completion
from shared.pipeline.ingest import ingest
from shared.pipeline.label import label_shard
from shared.pipeline.messages import deferred_shard
from shared.queueing.local import LocalQueue
from shared.services import Services
from shared.settings import Settings
from shared.storage.local import LocalBlobStore
from shared.teacher import ratelimit
from shared.teacher.cache import ResponseCache, cache_key
from shared.teacher.replies import TeacherReply, Usage
from shared.testkit.teacher import FakeTeacher, Fault, answers_from_jsonl


@pytest.fixture()
def world(tmp_path: Path):
    data = tmp_path / "data"
    write_nli_sample(data, rows=40, validation_rows=30)
    store = LocalBlobStore(tmp_path / "storage")
    answers = answers_from_jsonl(data / "train.jsonl") | answers_from_jsonl(data / "validation.jsonl")
    with FakeTeacher(answers) as teacher, LocalQueue(tmp_path / "queue.db") as queue:
        services = Services(store=store, queue=queue, finetuner=RecordingFineTuner(),
                            settings=Settings(shard_rows=20), local_teacher_url=teacher.base_url)
        yield services, queue, teacher, data


def submit(services: Services, data: Path, job: str, **manifest: object) -> None:
    for name in ("train.jsonl", "validation.jsonl"):
        services.store.upload_from(f"input/{job}/{name}", data / name)
    doc = {"task": "nli", "training_file": "train.jsonl", "validation_file": "validation.jsonl", "min_rows": 10,
           "teacher": {"kind": "local", "model": "distill-test-teacher"}, "finetune": False, **manifest}
    services.store.write(f"input/{job}/manifest.json", dumps(doc))
    ingest(services, f"input/{job}/manifest.json")


def run_job(services: Services, queue: LocalQueue, data: Path, job: str, **manifest: object) -> dict:
    submit(services, data, job, **manifest)
    for body in drain(queue, "shards"):
        label_shard(services, body)
    for body in drain(queue, "completions"):
        on_completion(services, body)
    return read_json(services.store, JobPaths("jobs", job).status)


def test_a_second_job_with_the_same_rows_is_answered_from_the_cache(world) -> None:
    services, queue, teacher, data = world
    first = run_job(services, queue, data, "job-a")
    assert teacher.requests_total == 70 and first["cache"] == {"hits": 0, "tokens_saved": 0}
    second = run_job(services, queue, data, "job-b")
    assert teacher.requests_total == 70
    assert second["state"] == "dataset ready" and second["accepted"] == first["accepted"]
    assert second["cache"]["hits"] == 70
    assert second["cache"]["tokens_saved"] == first["tokens"]["prompt"] + first["tokens"]["completion"] > 0
    assert second["tokens"] == {"prompt": 0, "completion": 0}
    train = [services.store.read(f"jobs/{job}/train.jsonl").data for job in ("job-a", "job-b")]
    assert train[0] == train[1]


def test_no_cache_calls_the_teacher_and_keeps_nothing(world) -> None:
    services, queue, teacher, data = world
    run_job(services, queue, data, "job-a", cache=False)
    run_job(services, queue, data, "job-b", cache=False)
    assert teacher.requests_total == 140
    assert list(services.store.list("teacher-cache/")) == []


def test_the_key_covers_teacher_body_and_is_stable() -> None:
    teacher = TeacherSettings(kind=TeacherKind.OPENAI_COMPATIBLE, url="http://a", model="m")
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "temperature": 0.0}
    assert cache_key(teacher, body) == cache_key(teacher, json.loads(json.dumps(body)))
    assert cache_key(teacher, body) != cache_key(teacher, {**body, "temperature": 0.5})
    assert cache_key(teacher, body) != cache_key(teacher.model_copy(update={"url": "http://b"}), body)


def test_concurrent_puts_keep_one_reply_and_unreadable_entries_are_misses(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    cache = ResponseCache(store, "teacher-cache")
    reply = TeacherReply("entailment", "stop", Usage(10, 2), attempts=1, latency_s=0.1)
    cache.put("ab" * 32, reply)
    cache.put("ab" * 32, TeacherReply("other", "stop", Usage(1, 1), attempts=1, latency_s=0.1))
    hit = cache.get("ab" * 32)
    assert hit is not None and hit.content == "entailment" and hit.cached and hit.usage == Usage(10, 2)
    store.write(cache.path("cd" * 32), b"not json")
    assert cache.get("cd" * 32) is None


def test_a_throttled_shard_goes_back_scheduled_and_its_answered_rows_are_not_paid_again(world) -> None:
    services, queue, teacher, data = world
    services.settings = Settings(shard_rows=20, defer_after_seconds=1.0)  # as in Azure: never sleep long on a lock
    submit(services, data, "job-t", limits={"concurrency": 1})
    [first, *_] = drain(queue, "shards")
    paths = JobPaths("jobs", "job-t")
    fourth = decode_shard(services.store.read(paths.shard(0)).data)[3][1].messages[-1]["content"]
    teacher.inject(Fault.RATE_LIMIT, retry_after=60, match=fourth)
    label_shard(services, first)
    assert teacher.requests_total == 4  # three answered, the fourth refused; the rest never sent
    assert services.store.read(paths.result(0)) is None and queue.counts("completions")["active"] == 0
    assert queue.counts("shards")["scheduled"] == 1
    assert queue.next_visible_at("shards") > time.time() + 50
    waiting = read_json(services.store, paths.status)["waiting"]  # `distill status` shows the wait
    assert waiting["why"] == "the teacher's rate limit" and waiting["until"] > time.time() + 50

    ratelimit.LIMITERS.clear()  # a minute later: the limiter's pause is over
    label_shard(services, {**first, "deferrals": 1})
    assert teacher.requests_total == 4 + 17
    header = json.loads(services.store.read(paths.result(0)).data.splitlines()[0])
    assert header["accepted"] == 20 and header["cache_hits"] == 3


def test_a_throttled_shard_message_id_is_new_per_deferral_and_repeatable() -> None:
    body = {"job": "j", "shard": 3}
    once = deferred_shard(body, 2_000_000_000.0)
    assert once.message_id == deferred_shard(body, 2_000_000_001.0).message_id == "j/shard/3/deferred/1"
    assert deferred_shard(dict(once.body), 2_000_000_000.0).message_id == "j/shard/3/deferred/2"
    assert once.scheduled_at is not None and once.scheduled_at.timestamp() == 2_000_000_000.0


BATCH = {"enabled": True, "poll_seconds": 0.01, "max_rounds": 2}


def settle(services, queue, job: str, *, deliveries: int = 200) -> dict:
    """Deliver shard messages (the scheduled ones as they fall due), then completions."""
    for _ in range(deliveries):
        if queue.idle(["shards"]):
            break
        for message in queue.receive("shards", 10):
            label_shard(services, message.body)
            queue.complete(message)
        time.sleep(0.01)
    for body in drain(queue, "completions"):
        on_completion(services, body)
    return read_json(services.store, JobPaths("jobs", job).status)


def test_a_batch_job_labels_every_row_through_batches_and_keeps_their_ids(world) -> None:
    services, queue, teacher, data = world
    submit(services, data, "job-b", batch=BATCH)
    record = settle(services, queue, "job-b")
    assert record["state"] == "dataset ready" and record["accepted"] == {"train": 40, "validation": 30}
    assert len(teacher.batches.batches) == record["shards"] == 4  # one batch a shard, every request in it
    assert teacher.requests_total == 70
    assert record["cache"]["hits"] == 0 and record["tokens"]["prompt"] > 0  # paid by this job's batches
    assert {s["id"] for s in record["batches"].values()} == set(teacher.batches.batches)
    assert all(s["collected"] and s["status"] == "completed" for s in record["batches"].values())
    purposes = {purpose for purpose, _ in teacher.batches.files.values()}
    assert "batch" in purposes


def test_a_redelivered_shard_polls_its_batch_instead_of_submitting_another(world) -> None:
    services, queue, teacher, data = world
    teacher.batches.pending_polls = 3
    submit(services, data, "job-r", batch=BATCH)
    [first, *_] = drain(queue, "shards")
    label_shard(services, first)  # submits
    label_shard(services, first)  # the same message again, as after a restart: polls
    assert len(teacher.batches.batches) == 1
    assert queue.counts("shards")["active"] + queue.counts("shards")["scheduled"] >= 1
    record = read_json(services.store, JobPaths("jobs", "job-r").status)
    assert record["batches"]["0"]["round"] == 1 and not record["batches"]["0"]["collected"]


def test_a_batch_submitted_just_before_a_crash_is_found_not_submitted_again(world,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.jobs.record import JobRecord

    services, queue, teacher, data = world
    teacher.batches.pending_polls = 3
    submit(services, data, "job-c", batch=BATCH)
    [first, *_] = drain(queue, "shards")
    real_set_batch = JobRecord.set_batch

    def crash(record: JobRecord, shard: int, batch: dict) -> bool:
        raise RuntimeError("the process died before the batch id was kept")

    monkeypatch.setattr(JobRecord, "set_batch", crash)
    with pytest.raises(RuntimeError):
        label_shard(services, first)  # submitted, id lost
    monkeypatch.setattr(JobRecord, "set_batch", real_set_batch)
    label_shard(services, first)  # delivered again: finds the batch by its metadata
    assert len(teacher.batches.batches) == 1
    record = read_json(services.store, JobPaths("jobs", "job-c").status)
    assert record["batches"]["0"]["id"] == next(iter(teacher.batches.batches))


def test_requests_a_batch_failed_go_into_the_next_round_then_are_rejected_with_the_reason(world) -> None:
    services, queue, teacher, data = world
    submit(services, data, "job-f", batch=BATCH)
    paths = JobPaths("jobs", "job-f")
    rows = decode_shard(services.store.read(paths.shard(0)).data)
    flaky, broken = (row.messages[-1]["content"] for _, row in rows[:2])
    teacher.inject(Fault.SERVER_ERROR, times=1, match=flaky)  # fails in round 1 only
    teacher.inject(Fault.SERVER_ERROR, times=5, status=503, match=broken)  # fails in every round
    record = settle(services, queue, "job-f")
    assert record["state"] == "dataset ready" and record["rejected"] == 1
    assert record["rejected_by_reason"] == {"teacher_error": 1}
    assert record["batches"]["0"]["round"] == 2 and record["batches"]["1"]["round"] == 1
    [rejected] = [json.loads(line) for line in services.store.read(paths.file("rejected.jsonl")).data.splitlines()]
    assert rejected["id"] == rows[1][1].id and "HTTP 503" in rejected["detail"]


def test_distill_run_restarted_pays_nothing_twice_unless_no_cache(tmp_path: Path, monkeypatch) -> None:
    from shared.cli import main

    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    write_nli_sample(tmp_path / "data", rows=40, validation_rows=30)
    argv = ["run", "--task", "nli", "--train", str(tmp_path / "data" / "train.jsonl"), "--validation",
            str(tmp_path / "data" / "validation.jsonl"), "--teacher", "test", "--min-rows", "10", "--no-finetune",
            "--job", "cached", "--rpm", "6000"]
    status = tmp_path / "home" / "storage" / "jobs" / "cached" / "status.json"
    assert main(argv) == 0
    assert json.loads(status.read_text())["cache"]["hits"] == 0
    assert main([*argv, "--restart"]) == 0
    record = json.loads(status.read_text())
    assert record["cache"]["hits"] == 70 and record["tokens"] == {"prompt": 0, "completion": 0}
    assert main([*argv, "--restart", "--no-cache"]) == 0
    record = json.loads(status.read_text())
    assert record["cache"]["hits"] == 0 and record["tokens"]["prompt"] > 0


def test_batch_mode_needs_the_cache(tmp_path: Path) -> None:
    from shared.manifest.load import manifest_from_dict
    from shared.manifest.model import ManifestError

    with pytest.raises(ManifestError, match=r"batch\.enabled: needs the response cache"):
        manifest_from_dict({"task": "nli", "training_file": "t.jsonl", "cache": False, "batch": {"enabled": True}},
                           tmp_path)
