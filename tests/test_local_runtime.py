"""The local runtime drives the registered functions: poison messages, restarts, the status endpoint."""

import _thread
import json
import threading
import time
from pathlib import Path

import azure.functions as func
import pytest

from functions.status import status as route
from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.local.runtime import LocalRuntime, registered_functions
from shared.local.samples import write_nli_sample
from shared.pipeline.cancel import CancelWatch
from shared.storage.local import LocalBlobStore
from shared.testkit.teacher import FakeTeacher, answers_from_jsonl


def uploaded_job(tmp_path: Path) -> tuple[LocalBlobStore, dict[str, str]]:
    """Job job1's sample NLI data and manifest in a local store's input container; the teacher's answers to it."""
    data = tmp_path / "data"
    write_nli_sample(data, rows=90, validation_rows=70)
    store = LocalBlobStore(tmp_path / "storage")
    for name in ("train.jsonl", "validation.jsonl"):
        store.upload_from(f"input/job1/{name}", data / name)
    manifest = {"task": "nli", "training_file": "train.jsonl", "validation_file": "validation.jsonl",
                "teacher": {"kind": "local", "model": "distill-test-teacher"}}
    store.write("input/job1/manifest.json", dumps(manifest))
    return store, answers_from_jsonl(data / "train.jsonl") | answers_from_jsonl(data / "validation.jsonl")


@pytest.fixture()
def runtime(tmp_path: Path):
    store, answers = uploaded_job(tmp_path)
    with FakeTeacher(answers) as teacher:
        local = LocalRuntime(store, tmp_path / "queue.db", environ={}, local_teacher_url=teacher.base_url)
        yield local, store
        local.close()


def status(store: LocalBlobStore) -> dict:
    return read_json(store, JobPaths("jobs", "job1").status)


def test_a_poison_shard_is_dead_lettered_and_fails_the_job_readably(runtime) -> None:
    local, store = runtime
    local.blob_created("input/job1/manifest.json")
    store.write(JobPaths("jobs", "job1").shard(1), b"{not json\n")
    local.drain(lambda: status(store)["state"] in ("failed", "succeeded"))
    record = status(store)
    assert record["state"] == "failed"
    expected = "shard 1 was dead-lettered after 5 deliveries (MaxDeliveryCountExceeded: JSONDecodeError: Expecting"
    assert record["errors"][0].startswith(expected)
    [letter] = local.queue.dead_letters("shards")
    assert letter.body == {"job": "job1", "shard": 1}
    assert CancelWatch(store, JobPaths("jobs", "job1"), 0)()  # the other shards' teacher calls stop


def test_the_whole_flow_runs_through_the_registered_functions(runtime) -> None:
    local, store = runtime
    local.blob_created("input/job1/manifest.json")
    local.drain(lambda: status(store)["state"] in ("failed", "succeeded"))
    record = status(store)
    assert record["state"] == "succeeded", record["errors"]
    assert record["finetune"]["status"] == "Completed"
    assert record["accepted"] == {"train": 90, "validation": 70}


def test_the_status_endpoint_returns_the_record(runtime) -> None:
    local, _ = runtime
    local.blob_created("input/job1/manifest.json")
    ok = route(func.HttpRequest("GET", "/api/jobs/job1", route_params={"job": "job1"}, body=b""))
    assert ok.status_code == 200 and json.loads(ok.get_body())["job"] == "job1"
    missing = route(func.HttpRequest("GET", "/api/jobs/nope", route_params={"job": "nope"}, body=b""))
    assert missing.status_code == 404
    bad = route(func.HttpRequest("GET", "/api/jobs/..", route_params={"job": ".."}, body=b""))
    assert bad.status_code == 400


def test_the_app_registers_every_trigger_with_its_binding() -> None:
    found = registered_functions()
    assert set(found) == {"blob", "eventgrid", "queue:jobs", "queue:shards", "queue:completions", "queue:evaluations",
                          "queue:shards/$DeadLetterQueue", "queue:completions/$DeadLetterQueue",
                          "queue:evaluations/$DeadLetterQueue"}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_dead_letter_that_cannot_be_read_is_completed_not_delivered_for_ever(runtime, body: bytes, caplog) -> None:
    from azure.functions.servicebus import ServiceBusMessage

    function, arg = registered_functions()["queue:shards/$DeadLetterQueue"]
    letter = ServiceBusMessage(body=body, message_id="x", content_type="application/json", delivery_count=5,
                               dead_letter_reason="MaxDeliveryCountExceeded", application_properties={},
                               user_properties={})
    assert function(**{arg: letter}) is None  # returns: the host completes it
    assert "cannot be read" in caplog.text


def test_ctrl_c_while_handlers_outlive_their_job_stops_them_and_hands_their_messages_back(tmp_path: Path) -> None:
    """The job ends (here: as soon as its first shard is at the teacher) while shards still wait for replies that take
    a minute: Ctrl-C then cancels them and hands their messages back, as it does while the job runs."""
    store, answers = uploaded_job(tmp_path)
    with FakeTeacher(answers, latency=60) as teacher:
        local = LocalRuntime(store, tmp_path / "queue.db", environ={}, local_teacher_url=teacher.base_url)
        local.blob_created("input/job1/manifest.json")
        threading.Timer(3.0, _thread.interrupt_main).start()
        threading.Timer(4.0, setattr, (teacher, "latency", 0.0)).start()  # a run left waiting ends within a minute
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            local.drain(lambda: teacher.requests_total > 0)
        assert time.monotonic() - started < 15
        handed_back = local.queue.receive("shards", 10)
        local.close()
    assert handed_back and all(m.delivery_count == 2 for m in handed_back)
