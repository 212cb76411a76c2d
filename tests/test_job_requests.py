"""Job requests on the `jobs` queue: start (inline or an uploaded manifest), cancel and resume, each through the
trigger registered in function_app.py on the embedded runtime; repeats, redeliveries and bad requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.functions.servicebus import ServiceBusMessage

from shared.cli import main
from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.local.runtime import LocalRuntime
from shared.local.samples import nli_pairs, nli_row
from shared.pipeline.job_requests import on_job_request, refusal
from shared.pipeline.messages import job_request
from shared.ports import MESSAGE_ID_CHARS
from shared.storage.local import LocalBlobStore
from shared.tasks import Task
from shared.testkit.teacher import FakeTeacher, answers_from_jsonl

LONGEST = "J" + "x_-9" * 63 + "ab"  # a 255-character job id


def nli_bytes(rows: int, seed: int) -> bytes:
    pairs = nli_pairs(seed=seed)
    return "".join(json.dumps(nli_row(*next(pairs))) + "\n" for _ in range(rows)).encode()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[LocalRuntime, FakeTeacher, LocalBlobStore]]:
    store = LocalBlobStore(tmp_path / "storage")
    store.write("input/uploads/train.jsonl", nli_bytes(120, 1))
    store.write("input/uploads/validation.jsonl", nli_bytes(70, 2))
    answers: dict[str, str] = {}
    for name in ("train", "validation"):
        (tmp_path / f"{name}.jsonl").write_bytes(store.read(f"input/uploads/{name}.jsonl").data)
        answers |= answers_from_jsonl(tmp_path / f"{name}.jsonl")
    with FakeTeacher(answers, task=Task.NLI) as teacher:
        runtime = LocalRuntime(store, tmp_path / "queue.db", environ={}, local_teacher_url=teacher.base_url)
        yield runtime, teacher, store
        runtime.close()


MANIFEST = {"task": "nli", "training_file": "input/uploads/train.jsonl",
            "validation_file": "input/uploads/validation.jsonl", "teacher": {"kind": "local"}, "finetune": False}


def request(runtime: LocalRuntime, body: dict[str, Any], job: str) -> str:
    """Send the request as `distill send` does and run the pipeline until nothing is left; the message id."""
    message = job_request(body, job)
    runtime.queue.send("jobs", [message])
    runtime.drain(lambda: False)
    return message.message_id


def status(store: LocalBlobStore, job: str) -> dict[str, Any]:
    return read_json(store, JobPaths("jobs", job).status)


def test_an_inline_start_runs_its_job_once_however_often_it_is_sent_or_delivered(world) -> None:
    runtime, teacher, store = world
    body = {"version": 1, "action": "start", "job": "inline-1", "manifest": MANIFEST}
    first = request(runtime, body, "inline-1")
    assert status(store, "inline-1")["state"] == "dataset ready" and teacher.requests_total == 190
    assert sorted(store.list("input/inline-1/")) == ["input/inline-1/manifest.json", "input/inline-1/train.jsonl",
                                                      "input/inline-1/validation.jsonl"]
    assert request(runtime, body, "inline-1") == first  # the same id: the queue drops it
    assert on_job_request(runtime.services, json.dumps(body).encode(), first) is None  # delivered again
    assert teacher.requests_total == 190 and status(store, "inline-1")["state"] == "dataset ready"
    kept = [json.loads(line)["type"] for line in store.read("jobs/inline-1/events.jsonl").data.splitlines()]
    assert kept.count("Distill.Job.Accepted") == 1 and kept[-1] == "Distill.Job.DatasetReady"


def test_a_start_without_a_job_id_derives_it_as_distill_run_does(world) -> None:
    runtime, _, store = world
    body = {"version": 1, "action": "start", "manifest": MANIFEST}
    on_job_request(runtime.services, json.dumps(body).encode(), "m-1")
    runtime.drain(lambda: False)
    [job] = {path.split("/")[1] for path in store.list("jobs/") if path.endswith("/status.json")}
    assert job.startswith("nli-") and status(store, job)["state"] == "dataset ready"
    on_job_request(runtime.services, json.dumps(body).encode(), "m-2")  # the same content, another message
    assert {path.split("/")[1] for path in store.list("jobs/") if path.endswith("/status.json")} == {job}


def test_an_uploaded_manifest_and_a_start_naming_it_are_one_job(world) -> None:
    runtime, teacher, store = world
    for name in ("train", "validation"):
        store.write(f"input/up-1/{name}.jsonl", store.read(f"input/uploads/{name}.jsonl").data)
    manifest = {**MANIFEST, "training_file": "train.jsonl", "validation_file": "validation.jsonl"}
    store.write("input/up-1/manifest.json", dumps(manifest))
    runtime.blob_created("input/up-1/manifest.json")  # the upload starts it
    request(runtime, {"version": 1, "action": "start", "manifest_blob": "input/up-1/manifest.json"}, "up-1")
    assert status(store, "up-1")["state"] == "dataset ready" and teacher.requests_total == 190


def test_cancel_and_resume_steer_a_job(world) -> None:
    runtime, teacher, store = world
    budget = {**MANIFEST, "limits": {"budget_tokens": 2000, "concurrency": 1}}
    request(runtime, {"version": 1, "action": "start", "job": "steer-1", "manifest": budget}, "steer-1")
    assert status(store, "steer-1")["state"] == "budget spent"
    paid = teacher.requests_total
    resume = {"version": 1, "action": "resume", "job": "steer-1", "budget_tokens": 10**7}
    request(runtime, resume, "steer-1")
    done = status(store, "steer-1")
    assert done["state"] == "dataset ready" and done["accepted"]["train"] + done["accepted"]["validation"] == 190
    assert teacher.requests_total == 190 and paid < 190  # the rows labelled before were not paid for again
    start = {"version": 1, "action": "start", "job": "steer-2", "manifest": {**MANIFEST, "min_success_ratio": 0}}
    cancel = {"version": 1, "action": "cancel", "job": "steer-2"}
    assert on_job_request(runtime.services, json.dumps(start).encode(), "s-2") is None  # ingested, shards sent
    assert on_job_request(runtime.services, json.dumps(cancel).encode(), "c-2") is None  # before any is labelled
    runtime.drain(lambda: False)
    assert status(store, "steer-2")["state"] == "cancelled" and teacher.requests_total == 190
    assert on_job_request(runtime.services, json.dumps(cancel).encode(), "c-3") is None  # ended: nothing changes
    kept = [json.loads(line)["type"] for line in store.read("jobs/steer-2/events.jsonl").data.splitlines()]
    assert kept[-1] == "Distill.Job.Cancelled" and kept.count("Distill.Job.Cancelled") == 1


@pytest.mark.parametrize(("body", "reason", "failed"), [
    ({"version": 1, "action": "launch", "job": "bad-1"}, "unknown-action", None),
    ({"version": 2, "action": "start", "job": "bad-2"}, "unknown-version", None),
    ({"version": 1, "action": "cancel", "job": "no-such-job"}, "no-such-job", None),
    ({"version": 1, "action": "start", "job": "bad-4", "manifest": {**MANIFEST, "task": "poetry"}},
     "invalid-manifest", "bad-4"),
    ({"version": 1, "action": "start", "job": "bad-5", "manifest": {**MANIFEST, "training_file": "elsewhere/t.jsonl"}},
     "invalid-manifest", "bad-5"),
    ({"version": 1, "action": "resume", "job": "bad-6", "budget_tokens": "lots"}, "no-such-job", None),
])
def test_a_request_that_cannot_be_honoured_is_dead_lettered_with_its_reason(world, body: dict[str, Any],
                                                                            reason: str, failed: str | None) -> None:
    runtime, teacher, store = world
    message_id = request(runtime, body, str(body["job"]))
    [letter] = runtime.queue.dead_letters("jobs")
    assert letter.message_id == message_id and letter.reason == reason and letter.description
    assert refusal(runtime.services, message_id)["reason"] == reason
    if failed:
        assert status(store, failed)["state"] == "failed" and "refused request" in status(store, failed)["errors"][0]
    assert teacher.requests_total == 0


def test_a_body_that_is_not_json_is_refused_by_the_registered_trigger(world) -> None:
    runtime, _, _ = world
    from shared.local.runtime import registered_functions

    function, arg = registered_functions()["queue:jobs"]
    garbage = ServiceBusMessage(body=b"{not json", message_id="garbage-1", content_type="application/json",
                                application_properties={}, user_properties={})
    function(**{arg: garbage})  # returns normally: the message is completed, never delivered again
    assert refusal(runtime.services, "garbage-1")["reason"] == "not-json"


def test_every_request_id_fits_service_bus_for_the_longest_job_id() -> None:
    ids = [job_request({"action": action, "budget_tokens": 10**12}, LONGEST).message_id
           for action in ("start", "cancel", "resume")]
    assert max(map(len, ids)) <= MESSAGE_ID_CHARS and len(set(ids)) == 3
    higher = job_request({"action": "resume", "budget_tokens": 10**12 + 1}, LONGEST).message_id
    assert higher not in ids  # a second resume with a higher budget is a new message


def test_distill_send_runs_the_seed_nli_job_and_its_events_are_listed_once(
        shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    seed = shared_data / "seed" / "nli"
    message = tmp_path / "start.json"
    message.write_text(json.dumps({"version": 1, "action": "start", "job": "sent-1", "manifest": {
        "task": "nli", "training_file": str(seed / "train.jsonl"), "validation_file": str(seed / "validation.jsonl"),
        "teacher": {"kind": "local", "model": "distill-test-teacher"}, "finetune": False}}))
    assert main(["send", str(message)]) == 0
    assert "job sent-1: dataset ready" in capsys.readouterr().out
    assert main(["events", "sent-1"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len({e["id"] for e in listed}) == len(listed) and listed[0]["type"] == "Distill.Job.Accepted"
    assert listed[-1]["type"] == "Distill.Job.DatasetReady"
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1,\n "action": }')
    assert main(["send", str(bad)]) == 2
    assert f"{bad}:2:12: not JSON" in capsys.readouterr().err


def test_distill_send_hands_a_cancel_to_the_run_that_holds_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from shared.jobs.record import JobRecord, JobState
    from shared.local.run import job_lock, lock_file

    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    store = LocalBlobStore(tmp_path / "home" / "storage")
    labeling = JobRecord(job="busy-1", state=JobState.LABELING, created=1.0, shards=4, shards_done=[])
    store.write(JobPaths("jobs", "busy-1").status, dumps(labeling.to_json()))
    message = tmp_path / "cancel.json"
    message.write_text(json.dumps({"version": 1, "action": "cancel", "job": "busy-1"}))
    with job_lock(lock_file(tmp_path / "home", "busy-1")):  # another `distill run` holds the job
        assert main(["send", str(message)]) == 0
    assert "cancel handed over" in capsys.readouterr().out
    assert store.read(JobPaths("jobs", "busy-1").cancel_flag) is not None  # what that run's workers look for
    assert status(store, "busy-1")["cancel"]


def test_a_bad_start_naming_a_job_that_exists_leaves_that_job_alone(world) -> None:
    runtime, _, store = world
    request(runtime, {"version": 1, "action": "start", "job": "kept-1", "manifest": MANIFEST}, "kept-1")
    bad = {"version": 1, "action": "start", "job": "kept-1", "manifest": {**MANIFEST, "task": "poetry"}}
    assert on_job_request(runtime.services, json.dumps(bad).encode(), "bad-kept-1").reason == "invalid-manifest"
    assert status(store, "kept-1")["state"] == "dataset ready"
