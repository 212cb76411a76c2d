"""The user's CLI for a deployed app against Azurite: submit → the real function handlers → watch → download; cancel."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from shared.cli import main
from shared.finetune.run_events import run_event
from shared.jobs.blobs import read_json
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobState
from shared.local.runtime import LocalRuntime
from shared.local.samples import write_nli_sample
from shared.ports import Deployment, FineTuneRequest, RunState
from shared.storage.azure_blob import AzureBlobStore
from shared.testkit.teacher import FakeTeacher, answers_from_jsonl


class RecordingFineTuner:
    """Counts fine-tune starts (the cancel test needs to see that none happens)."""

    def __init__(self, *_: object) -> None:
        self.starts: Counter[str] = Counter()

    def start(self, request: FineTuneRequest) -> str:
        self.starts[request.name] += 1
        return request.name

    def state(self, name: str) -> RunState:
        return RunState(name, "Running")


@pytest.fixture()
def deployed(tmp_path: Path, azurite_connection_string: str, monkeypatch: pytest.MonkeyPatch):
    """Sample data with a manifest naming the test teacher by URL, the storage account in the environment."""
    monkeypatch.setenv("DISTILL_STORAGE_CONNECTION_STRING", azurite_connection_string)
    data = tmp_path / "data"
    write_nli_sample(data, rows=90, validation_rows=70)
    answers = answers_from_jsonl(data / "train.jsonl") | answers_from_jsonl(data / "validation.jsonl")
    with FakeTeacher(answers) as teacher:
        manifest = {"task": "nli", "training_file": "train.jsonl", "validation_file": "validation.jsonl",
                    "teacher": {"kind": "openai_compatible", "url": teacher.base_url, "model": "distill-test-teacher"},
                    "prompt": {"chain_of_thought": True}, "limits": {"concurrency": 2}}
        (data / "manifest.yaml").write_text(yaml.safe_dump(manifest))
        store = AzureBlobStore.from_connection_string(azurite_connection_string)
        yield store, data / "manifest.yaml", teacher, f"remote-{uuid.uuid4().hex[:10]}"


def is_final(store: AzureBlobStore, job: str) -> bool:
    record = read_json(store, JobPaths("jobs", job).status)
    return record is not None and JobState(record["state"]).final


def watched(runtime: LocalRuntime, store: AzureBlobStore, job: str) -> int:
    """Deliver the submitted job's manifest (what Event Grid does when it lands) and run the function handlers until
    the job ends, while `distill watch` follows it; watch's exit code."""
    try:
        runtime.blob_created(f"input/{job}/manifest.json")
        worker = threading.Thread(target=runtime.drain, args=(lambda: is_final(store, job),))
        worker.start()
        code = main(["watch", job, "--interval", "0.05", "--timeout", "120"])
        worker.join()
    finally:
        runtime.close()
    return code


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_submit_then_the_function_handlers_then_watch_and_download(deployed, tmp_path: Path, capsys) -> None:
    store, manifest, teacher, job = deployed
    assert main(["submit", str(manifest), "--job", job]) == 0
    out = capsys.readouterr().out
    assert "uploading train.jsonl" in out and "uploading validation.jsonl" in out and "(100%)" in out
    uploaded = json.loads(store.read(f"input/{job}/manifest.json").data)
    assert uploaded["training_file"] == "train.jsonl" and uploaded["validation_file"] == "validation.jsonl"
    assert store.read(f"input/{job}/train.jsonl").data == (manifest.parent / "train.jsonl").read_bytes()
    assert main(["status", "--remote", job]) == 0
    assert "submitted, waiting for ingest" in capsys.readouterr().out
    assert watched(LocalRuntime(store, tmp_path / "queue.db", environ={}), store, job) == 0
    out = capsys.readouterr().out
    assert f"job {job}: labeling: " in out and "succeeded" in out
    assert main(["download", job, "--out", str(tmp_path / "out")]) == 0
    got = tmp_path / "out"
    assert len(lines(got / "train.jsonl")) == 90 and len(lines(got / "validation.jsonl")) == 70
    assert lines(got / "rejected.jsonl") == []
    status = json.loads((got / "status.json").read_text())
    assert status["state"] == "succeeded"
    assert status["metrics"]["rows_accepted"] == 160 and status["metrics"]["tokens_total"] > 0
    assert teacher.requests_total == 160
    assert main(["submit", str(manifest), "--job", job]) == 0  # again: nothing uploaded, the job is named
    assert "already submitted" in capsys.readouterr().out
    assert main(["status", "--remote"]) == 0
    assert f"{job}\tsucceeded" in capsys.readouterr().out


class TrainingFineTuner:
    """A fine-tune that trains `<run>-model` at once and says so with the run event a workspace sends."""

    def __init__(self, store: object, publish: Callable[[dict], None], topic: str) -> None:
        self.publish, self.topic = publish, topic

    def start(self, request: FineTuneRequest) -> str:
        self.publish(run_event(request, status="Completed", error=None, workspace_topic=self.topic, run_type="test"))
        return request.name

    def state(self, name: str) -> RunState:
        return RunState(name, "Completed", output_model=f"{name}-model")


class ServedDeployer:
    """Deployments that are ready at once, at the test teacher's address (which answers as a perfect student)."""

    def __init__(self, url: str) -> None:
        self.url, self.deleted = url, []

    def deploy(self, job: str, role: str, model: str) -> Deployment:
        return Deployment(f"{job}-{role}", "ready", url=self.url, key="endpoint-key-7e57", kind="azure_ai")

    def delete(self, job: str, role: str) -> None:
        self.deleted.append(role)


def test_a_trained_job_is_watched_through_its_evaluation_and_its_report_downloaded(deployed, tmp_path: Path,
                                                                                     capsys) -> None:
    store, manifest, teacher, job = deployed
    assert main(["submit", str(manifest), "--job", job, "--quiet"]) == 0
    deployer = ServedDeployer(teacher.base_url)
    runtime = LocalRuntime(store, tmp_path / "queue.db", environ={}, finetuner=TrainingFineTuner, deployer=deployer)
    assert watched(runtime, store, job) == 0
    out = capsys.readouterr().out
    assert "evaluation on 70 validation rows (accuracy): teacher 1.000, base 1.000, distilled 1.000" in out, out
    assert sorted(deployer.deleted) == ["base", "distilled"]
    assert main(["download", job, "--out", str(tmp_path / "out")]) == 0
    got = tmp_path / "out"
    assert {"report.md", "report.json", "report.png", "evaluation.jsonl"} <= {p.name for p in got.iterdir()}
    assert len(lines(got / "evaluation.jsonl")) == 3 * 70
    assert json.loads((got / "report.json").read_text())["scores"] == {"teacher": 1.0, "base": 1.0, "distilled": 1.0}


def test_cancel_mid_way_keeps_the_labelled_rows_and_starts_no_finetune(deployed, tmp_path: Path, capsys) -> None:
    store, manifest, teacher, job = deployed
    assert main(["submit", str(manifest), "--job", job, "--quiet"]) == 0
    finetuner = RecordingFineTuner()
    runtime = LocalRuntime(store, tmp_path / "queue.db", environ={}, finetuner=lambda *_: finetuner)
    runtime.services.settings = replace(runtime.services.settings, cancel_check_seconds=0)
    try:
        runtime.blob_created(f"input/{job}/manifest.json")
        [first] = runtime.queue.receive("shards", 1)
        runtime.deliver(first)  # one shard of 50 rows labelled
        runtime.queue.complete(first)
        assert main(["cancel", job]) == 0
        assert main(["cancel", job]) == 0  # idempotent
        calls = teacher.requests_total
        runtime.drain(lambda: is_final(store, job))
    finally:
        runtime.close()
    assert teacher.requests_total == calls == 50  # no row of the cancelled job reached the teacher
    assert finetuner.starts == {}
    assert main(["watch", job, "--interval", "0"]) == 3  # ended cancelled
    assert main(["cancel", job]) == 0
    assert "already cancelled" in capsys.readouterr().out
    assert main(["download", job, "--out", str(tmp_path / "out")]) == 0
    got = tmp_path / "out"
    status = json.loads((got / "status.json").read_text())
    assert status["state"] == "cancelled" and "finetune" not in status
    labelled = len(lines(got / "train.jsonl")) + len(lines(got / "validation.jsonl"))
    rejected = [json.loads(line) for line in lines(got / "rejected.jsonl")]
    assert labelled == 50 and len(rejected) == 110  # nothing lost: every input row is in one of the files
    assert {r["reason"] for r in rejected} == {"cancelled"}


def test_cancel_mid_shard_stops_the_rows_not_yet_sent(deployed, tmp_path: Path) -> None:
    store, manifest, teacher, job = deployed
    assert main(["submit", str(manifest), "--job", job, "--quiet"]) == 0
    runtime = LocalRuntime(store, tmp_path / "queue.db", environ={}, finetuner=RecordingFineTuner)
    runtime.services.settings = replace(runtime.services.settings, cancel_check_seconds=0)
    cancelled = []

    class CancelAfterTenCalls:
        def row_done(self, *_: object) -> None:
            if teacher.requests_total >= 10 and not cancelled:
                cancelled.append(main(["cancel", job]))

        def waiting(self, *_: object) -> None:
            pass

        def step(self, *_: object) -> None:
            pass

        def paced(self, *_: object) -> None:
            pass

    runtime.services.progress = CancelAfterTenCalls()
    try:
        runtime.blob_created(f"input/{job}/manifest.json")
        [first] = runtime.queue.receive("shards", 1)
        runtime.deliver(first)
    finally:
        runtime.close()
    assert cancelled == [0]
    assert 10 <= teacher.requests_total <= 12  # the calls already in flight (concurrency 2) finish, no more start
    header, *rows = [json.loads(line) for line in store.read(JobPaths("jobs", job).result(0)).data.splitlines()]
    assert header["accepted"] == teacher.requests_total and header["rejected"] == 50 - teacher.requests_total
    assert all(r["reason"] == "cancelled" for r in rows if "answers" not in r)


def test_remote_commands_name_a_missing_job_and_a_missing_account(deployed, monkeypatch, capsys) -> None:
    _, manifest, _, job = deployed
    for argv in (["watch", job, "--interval", "0"], ["download", job], ["cancel", job], ["status", "--remote", job]):
        assert main(argv) == 2
        assert f"no job {job}" in capsys.readouterr().out
    monkeypatch.delenv("DISTILL_STORAGE_CONNECTION_STRING")
    assert main(["submit", str(manifest)]) == 2
    assert "DISTILL_STORAGE_CONNECTION_STRING" in capsys.readouterr().err


def test_submit_refuses_a_local_teacher_and_bad_data(deployed, capsys) -> None:
    _, manifest, _, job = deployed
    doc = yaml.safe_load(manifest.read_text())
    manifest.write_text(yaml.safe_dump({**doc, "teacher": {"kind": "local"}}))
    assert main(["submit", str(manifest), "--job", job]) == 1
    assert "cannot reach a teacher on this machine" in capsys.readouterr().out
    (manifest.parent / "train.jsonl").write_text('{"messages": "not a list"}\n')
    manifest.write_text(yaml.safe_dump(doc))
    assert main(["submit", str(manifest), "--job", job]) == 1
    assert "train.jsonl:1:" in capsys.readouterr().out
    assert main(["status", "--remote", job]) == 2  # nothing was uploaded


def test_submit_with_queue_sends_a_start_request_that_the_app_turns_into_the_job(
        deployed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from test_servicebus_sender import FakeClient, body_of, sent_messages

    from shared.ports import OutgoingMessage
    from shared.queueing.servicebus import ServiceBusQueueSender

    store, manifest, teacher, job = deployed
    client = FakeClient()
    monkeypatch.setattr("shared.cli.remote.open_queue", lambda environ: ServiceBusQueueSender(client))
    assert main(["submit", str(manifest), "--job", job, "--queue"]) == 0
    assert "sent a start request" in capsys.readouterr().out
    assert store.read(f"input/{job}/manifest.json") is None  # no upload starts it: the request does
    [[message]] = sent_messages(client, "jobs")
    body = body_of(message)
    assert message.message_id == f"{job}/start" and body["action"] == "start" and body["job"] == job
    assert body["manifest"]["training_file"] == f"input/{job}/train.jsonl"
    runtime = LocalRuntime(store, tmp_path / "queue.db", environ={})
    try:  # the app's side: the request arrives on its jobs queue
        runtime.queue.send("jobs", [OutgoingMessage(body, message.message_id)])
        runtime.drain(lambda: is_final(store, job))
    finally:
        runtime.close()
    assert read_json(store, JobPaths("jobs", job).status)["state"] == "succeeded"
    assert teacher.requests_total == 160
