"""The pipeline's handlers under repeats and races: one job, one dataset, one fine-tune."""

import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.local.samples import write_nli_sample
from shared.pipeline.aggregate import on_completion
from shared.pipeline.ingest import ingest
from shared.pipeline.label import label_shard
from shared.pipeline.run_events import on_run_event
from shared.ports import FineTuneRequest, RunState
from shared.queueing.local import LocalQueue
from shared.services import Services
from shared.settings import Settings
from shared.storage.local import LocalBlobStore
from shared.testkit.teacher import FakeTeacher, answers_from_jsonl

WORKSPACE = "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w"


class RecordingFineTuner:
    def __init__(self) -> None:
        self.starts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def start(self, request: FineTuneRequest) -> str:
        with self.lock:
            self.starts[request.name] += 1
            self.last = request
        return request.name

    def state(self, name: str) -> RunState:
        return RunState(name, "Completed", output_model=f"{name}-model")


@pytest.fixture()
def pipeline(tmp_path: Path):
    data = tmp_path / "data"
    write_nli_sample(data, rows=90, validation_rows=70)
    store = LocalBlobStore(tmp_path / "storage")
    for name in ("train.jsonl", "validation.jsonl"):
        store.upload_from(f"input/job1/{name}", data / name)
    manifest = {"task": "nli", "training_file": "train.jsonl", "validation_file": "validation.jsonl",
                "teacher": {"kind": "local", "model": "distill-test-teacher"}, "prompt": {"chain_of_thought": True},
                "display_name": "NLI run", "description": "d", "tags": {"team": "t"},
                "student": {"instance_type": "Standard_NC24ads_A100_v4"},
                "evaluation": {"deploy": "none"}}  # the evaluation step has its own tests (test_evaluate_step.py)
    store.write("input/job1/manifest.json", dumps(manifest))
    answers = answers_from_jsonl(data / "train.jsonl") | answers_from_jsonl(data / "validation.jsonl")
    with FakeTeacher(answers) as teacher, LocalQueue(tmp_path / "queue.db") as queue:
        services = Services(store=store, queue=queue, finetuner=RecordingFineTuner(),
                            settings=Settings(shard_rows=20, workspace_topic=WORKSPACE),
                            local_teacher_url=teacher.base_url)
        yield services, queue, teacher


def drain(queue: LocalQueue, name: str) -> list[dict]:
    bodies = []
    while batch := queue.receive(name, 50):
        for message in batch:
            bodies.append(message.body)
            queue.complete(message)
    return bodies


def test_duplicate_blob_events_start_one_job(pipeline) -> None:
    services, queue, _ = pipeline
    for _ in range(3):
        assert ingest(services, "input/job1/manifest.json") == "job1"
    assert ingest(services, "input/job1/train.jsonl") is None
    shards = drain(queue, "shards")
    assert sorted(b["shard"] for b in shards) == list(range(8))  # 160 rows, 20 a shard, each sent once
    record = read_json(services.store, JobPaths("jobs", "job1").status)
    assert record["state"] == "labeling" and record["rows"] == {"total": 160, "train": 90, "validation": 70,
                                                                "per_shard": 20}


def test_a_redelivered_shard_is_not_sent_to_the_teacher_again(pipeline) -> None:
    services, queue, teacher = pipeline
    ingest(services, "input/job1/manifest.json")
    [first, *_] = drain(queue, "shards")
    label_shard(services, first)
    calls = teacher.requests_total
    assert calls == 20
    pace = read_json(services.store, JobPaths("jobs", "job1").status)["pace"]  # what the teacher's headers say
    assert pace == {"per_minute": 1_000_000, "source": "headers"}
    label_shard(services, first)
    assert teacher.requests_total == calls
    assert len(drain(queue, "completions")) == 1  # the repeated completion has the same id: dropped


def test_concurrent_and_duplicate_completions_start_exactly_one_finetune(pipeline) -> None:
    services, queue, _ = pipeline
    ingest(services, "input/job1/manifest.json")
    for body in drain(queue, "shards"):
        label_shard(services, body)
    completions = drain(queue, "completions") * 3
    threads = [threading.Thread(target=on_completion, args=(services, body)) for body in completions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert services.finetuner.starts == {"job1-ft": 1}
    last = services.finetuner.last  # what the manifest says of the AzureML job reaches the fine-tuner
    assert (last.display_name, last.description, last.instance_type) == ("NLI run", "d", "Standard_NC24ads_A100_v4")
    assert last.tags == {"team": "t", "distill_job": "job1"}
    folder = JobPaths("jobs", "job1")
    record = read_json(services.store, folder.status)
    assert record["state"] == "fine-tuning" and record["finetune"]["started"]
    assert record["accepted"] == {"train": 90, "validation": 70} and record["rejected"] == 0
    train = services.store.read(folder.file("train.jsonl")).data.decode().splitlines()
    assert len(train) == 90 and json.loads(train[0])["messages"][-1]["role"] == "assistant"


def run_event(status: str | None, *, topic: str = WORKSPACE, run: str = "job1-ft", job: str = "job1",
              event_type: str = "Microsoft.MachineLearningServices.RunStatusChanged") -> dict:
    data = {"experimentId": "e", "experimentName": "distill", "runId": run, "runType": "finetuning",
            "runTags": {"distill_job": job}, "runProperties": {}}
    if status:
        data["runStatus"] = status
    return {"id": f"{run}-{status}", "topic": topic, "subject": f"experiments/e/runs/{run}",
            "eventType": event_type, "data": data, "dataVersion": "", "eventTime": "2026-11-28T00:00:00+00:00"}


@pytest.fixture()
def fine_tuning(pipeline):
    services, queue, _ = pipeline
    ingest(services, "input/job1/manifest.json")
    for body in drain(queue, "shards"):
        label_shard(services, body)
    for body in drain(queue, "completions"):
        on_completion(services, body)
    return services


def state(services: Services) -> dict:
    return read_json(services.store, JobPaths("jobs", "job1").status)


@pytest.mark.parametrize("status,expected", [("Completed", "succeeded"), ("Failed", "failed"),
                                             ("Canceled", "failed")])
def test_terminal_run_events_finish_the_job(fine_tuning, status: str, expected: str) -> None:
    on_run_event(fine_tuning, run_event(status))
    record = state(fine_tuning)
    assert record["state"] == expected and record["finetune"]["status"] == status
    if expected == "succeeded":
        assert record["finetune"]["output_model"] == "job1-ft-model"
    else:
        assert f"ended {status}" in record["errors"][-1]


def test_other_workspaces_other_runs_and_running_statuses_are_ignored(fine_tuning) -> None:
    on_run_event(fine_tuning, run_event("Completed", topic=WORKSPACE.replace("/w", "/other")))
    on_run_event(fine_tuning, run_event("Completed", run="someone-elses-run"))
    on_run_event(fine_tuning, run_event("Running"))
    on_run_event(fine_tuning, run_event("Completed", job="no-such-job"))
    assert state(fine_tuning)["state"] == "fine-tuning"


def test_a_repeated_or_late_event_changes_nothing(fine_tuning) -> None:
    on_run_event(fine_tuning, run_event(None, event_type="Microsoft.MachineLearningServices.RunCompleted"))
    done = state(fine_tuning)
    assert done["state"] == "succeeded"
    on_run_event(fine_tuning, run_event("Failed"))
    on_run_event(fine_tuning, run_event("Completed"))
    assert state(fine_tuning) == done


def test_the_poller_finishes_a_job_whose_event_never_came(fine_tuning) -> None:
    from shared.pipeline.run_events import poll_unfinished

    assert poll_unfinished(fine_tuning) == ["job1"]
    record = state(fine_tuning)
    assert record["state"] == "succeeded" and record["finetune"]["output_model"] == "job1-ft-model"
    assert poll_unfinished(fine_tuning) == []


def test_the_poller_reads_only_jobs_still_in_flight(fine_tuning) -> None:
    from shared.jobs.record import JobRecord, JobState
    from shared.pipeline.run_events import poll_unfinished

    store = fine_tuning.store
    for n in range(40):  # history: jobs that ended long ago, as old deployments left them (no marker)
        done = JobRecord(job=f"old-{n}", state=JobState.SUCCEEDED, created=0.0)
        store.write(JobPaths("jobs", f"old-{n}").status, json.dumps(done.to_json()).encode())
    read: list[str] = []
    real_read = store.read
    store.read = lambda path: read.append(path) or real_read(path)  # type: ignore[method-assign]
    assert poll_unfinished(fine_tuning) == ["job1"]
    assert not any("/old-" in path for path in read) and store.read(JobPaths("jobs", "job1").active_marker) is None
    read.clear()
    assert poll_unfinished(fine_tuning) == [] and read == []  # nothing is in flight: nothing is read


def test_a_fine_tune_that_cannot_be_started_fails_the_job_with_the_reason(pipeline) -> None:
    from shared.ports import FineTuneRefused

    services, queue, _ = pipeline

    class Refusing(RecordingFineTuner):
        def start(self, request: FineTuneRequest) -> str:
            raise FineTuneRefused("the workspace needs a Marketplace subscription for this student")

    services.finetuner = Refusing()
    ingest(services, "input/job1/manifest.json")
    for body in drain(queue, "shards"):
        label_shard(services, body)
    for body in drain(queue, "completions"):
        on_completion(services, body)  # no exception: the message is done, the job has failed
    record = state(services)
    assert record["state"] == "failed" and "needs a Marketplace subscription" in record["errors"][-1]
