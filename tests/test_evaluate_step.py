"""The evaluation step: deployed (or named) students asked the validation rows over real HTTP, once, whatever the
queue repeats; every way it can fail ends the job with a readable reason, the model kept and the deployments removed."""

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobState, read_record
from shared.local.runtime import service_bus_message
from shared.local.samples import write_nli_sample
from shared.pipeline.aggregate import on_completion
from shared.pipeline.dead_letters import on_dead_letter
from shared.pipeline.evaluate import on_evaluation
from shared.pipeline.ingest import ingest
from shared.pipeline.label import label_shard
from shared.pipeline.run_events import on_run_event, poll_unfinished
from shared.ports import Deployment, FineTuneRequest, RunState
from shared.queueing.local import LocalQueue
from shared.services import Services
from shared.settings import Settings
from shared.storage.local import LocalBlobStore
from shared.testkit.teacher import FakeTeacher, Fault, answers_from_jsonl

WORKSPACE = "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w"
TEACHER_KEY = "sk-teacher-0123456789abcdef"
DEPLOYMENT_KEY = "deployment-key-9f8e7d6c5b4a"
ENDPOINT_KEY = "endpoint-key-1a2b3c4d5e6f"
PATHS = JobPaths("jobs", "job1")
VALIDATION_ROWS = 40  # the fewest a validation file may hold
SCORED = 12  # evaluation.max_rows: the rows scored


class Trained:
    """A fine-tuner whose run has trained `job1-ft-model`."""

    def start(self, request: FineTuneRequest) -> str:
        return request.name

    def state(self, name: str) -> RunState:
        return RunState(name, "Completed", output_model=f"{name}-model")


class FakeDeployer:
    """Deployments that become ready after `creating` looks, at `url`, or fail with `fail`; every call recorded."""

    def __init__(self, url: str, *, creating: int = 0, fail: str | None = None) -> None:
        self.url, self.creating, self.fail = url, creating, fail
        self.looks: Counter[str] = Counter()
        self.deployed: dict[str, str] = {}
        self.deleted: list[str] = []

    def deploy(self, job: str, role: str, model: str) -> Deployment:
        self.looks[role] += 1
        self.deployed[role] = model
        name = f"{job}-{role}"
        if self.fail:
            return Deployment(name, "failed", error=self.fail)
        if self.looks[role] <= self.creating:
            return Deployment(name, "creating")
        return Deployment(name, "ready", url=self.url, key=DEPLOYMENT_KEY, kind="azure_ai")

    def delete(self, job: str, role: str) -> None:
        self.deleted.append(role)


@pytest.fixture()
def job(tmp_path: Path) -> Iterator[tuple[Services, LocalQueue, FakeTeacher, dict]]:
    """job1 labelled by a teacher behind a key, its fine-tune running; the same fake answers for the students."""
    data = tmp_path / "data"
    write_nli_sample(data, rows=80, validation_rows=VALIDATION_ROWS)
    answers = answers_from_jsonl(data / "train.jsonl") | answers_from_jsonl(data / "validation.jsonl")
    store = LocalBlobStore(tmp_path / "storage")
    for name in ("train.jsonl", "validation.jsonl"):
        store.upload_from(f"input/job1/{name}", data / name)
    with FakeTeacher(answers) as teacher, FakeTeacher(answers) as student, LocalQueue(tmp_path / "queue.db") as queue:
        manifest = {"task": "nli", "training_file": "train.jsonl", "validation_file": "validation.jsonl",
                    "teacher": {"url": teacher.base_url, "model": "big", "key_setting": "TEACHER_API_KEY"},
                    "min_rows": 40, "evaluation": {"timeout_seconds": 5, "max_retries": 0, "max_rows": SCORED}}
        services = Services(store=store, queue=queue, finetuner=Trained(),
                            settings=Settings(shard_rows=50, workspace_topic=WORKSPACE, evaluation_poll_seconds=0),
                            environ={"TEACHER_API_KEY": TEACHER_KEY, "STUDENT_KEY": ENDPOINT_KEY},
                            deployer=FakeDeployer(student.base_url))
        yield services, queue, student, manifest


def fine_tuned(services: Services, queue: LocalQueue, manifest: dict) -> None:
    """Ingest, label and assemble job1 with `manifest`: its fine-tune is under way."""
    services.store.write("input/job1/manifest.json", dumps(manifest))
    ingest(services, "input/job1/manifest.json")
    for name in ("shards", "completions"):
        while batch := queue.receive(name, 50):
            for message in batch:
                (label_shard if name == "shards" else on_completion)(services, message.body)
                queue.complete(message)
    started = read_record(services.store, PATHS)
    assert started.state is JobState.FINE_TUNING, started.errors


def completed_event() -> dict:
    data = {"experimentName": "distill", "runId": "job1-ft", "runType": "finetuning",
            "runTags": {"distill_job": "job1"}, "runProperties": {}, "runStatus": "Completed"}
    return {"id": "e1", "topic": WORKSPACE, "subject": "experiments/e/runs/job1-ft",
            "eventType": "Microsoft.MachineLearningServices.RunStatusChanged", "data": data}


def evaluate(services: Services, queue: LocalQueue) -> list[dict]:
    """Deliver the evaluation queue's messages until none is left; their bodies, in order."""
    bodies = []
    while batch := queue.receive("evaluations", 10):
        for message in batch:
            bodies.append(message.body)
            on_evaluation(services, message.body)
            queue.complete(message)
    return bodies


def record(services: Services) -> dict:
    return read_json(services.store, PATHS.status)


def every_stored_byte(services: Services) -> str:
    root = services.store.root  # type: ignore[attr-defined]
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in Path(root).rglob("*") if p.is_file())


def test_repeated_events_and_redelivery_evaluate_once(job, caplog: pytest.LogCaptureFixture) -> None:
    services, queue, student, manifest = job
    services.deployer.creating = 2  # two looks before the deployments are ready
    fine_tuned(services, queue, manifest)
    for _ in range(3):
        on_run_event(services, completed_event())  # Event Grid delivers the event three times
    poll_unfinished(services)  # and the poll timer sees the job evaluating
    assert record(services)["state"] == "evaluating"
    bodies = evaluate(services, queue)
    assert [b["polls"] for b in bodies] == [0, 1, 2]  # one message, looked at again twice, never more
    done = record(services)
    assert done["state"] == "succeeded" and done["finetune"]["output_model"] == "job1-ft-model"
    evaluation = done["evaluation"]
    assert set(evaluation["scores"]) == {"teacher", "base", "distilled"} and evaluation["rows"] == SCORED
    assert evaluation["scores"]["distilled"] == 1.0 and evaluation["mode"] == "reference"
    assert evaluation["agreement"] == 1.0 and evaluation["tokens"]["distilled"]["prompt"] > 0
    assert student.requests_total == 2 * SCORED  # base and distilled, each row once
    assert services.deployer.deployed == {"distilled": "job1-ft-model", "base": "SmolLM2-135M-Instruct"}
    assert sorted(services.deployer.deleted) == ["base", "distilled"]
    for body in bodies:  # redelivered after the end: nothing is asked again
        assert on_evaluation(services, body) is None
    on_run_event(services, completed_event())
    assert evaluate(services, queue) == [] and student.requests_total == 2 * SCORED
    assert student.last_credential == DEPLOYMENT_KEY
    stored, logged = every_stored_byte(services), caplog.text
    for secret in (TEACHER_KEY, DEPLOYMENT_KEY, ENDPOINT_KEY):
        assert secret not in stored and secret not in logged


def test_the_per_row_file_and_the_summary_agree(job) -> None:
    services, queue, student, manifest = job
    student.inject(Fault.WRONG_LABEL, times=5)  # the students miss some rows
    fine_tuned(services, queue, manifest)
    on_run_event(services, completed_event())
    evaluate(services, queue)
    report = read_json(services.store, PATHS.file("report.json"))
    lines = [json.loads(line) for line in services.store.read(PATHS.file("evaluation.jsonl")).data.splitlines()]
    assert len(lines) == 3 * SCORED and {line["model"] for line in lines} == {"teacher", "base", "distilled"}
    assert set(lines[0]) == {"id", "model", "answer", "target", "score"}
    for role, value in report["scores"].items():
        scores = [line["score"] for line in lines if line["model"] == role]
        assert value == pytest.approx(sum(scores) / len(scores), abs=1e-4)
    assert report["scores"]["base"] + report["scores"]["distilled"] == pytest.approx(2 - 5 / SCORED, abs=1e-3)
    assert record(services)["evaluation"]["scores"] == report["scores"]
    assert report["labels"] == {"checked": 80 + VALIDATION_ROWS, "agreed": 80 + VALIDATION_ROWS, "dropped": 0}
    for name in ("report.md", "report.png"):
        assert services.store.read(PATHS.file(name)) is not None
    assert "Targets: the reference answers of 12 validation rows" in services.store.read(
        PATHS.file("report.md")).data.decode()
    events = [json.loads(line) for line in services.store.read(PATHS.file("events.jsonl")).data.splitlines()]
    succeeded = next(e for e in events if e["type"] == "Distill.Job.Succeeded")
    assert succeeded["data"]["evaluation"]["scores"] == report["scores"]


def test_a_kept_endpoint_is_not_removed_and_the_job_says_where_it_is(job) -> None:
    services, queue, _, manifest = job
    manifest["evaluation"]["keep_endpoint"] = True
    fine_tuned(services, queue, manifest)
    on_run_event(services, completed_event())
    evaluate(services, queue)
    assert services.deployer.deleted == []
    assert record(services)["evaluation"]["kept"] == {"base": "job1-base", "distilled": "job1-distilled"}


def failed_evaluation(services: Services) -> str:
    """The job succeeded with its model, and its evaluation's error."""
    done = record(services)
    assert done["state"] == "succeeded" and done["finetune"]["output_model"] == "job1-ft-model"
    assert "scores" not in done["evaluation"]
    return done["evaluation"]["error"]


def test_a_failed_deployment_ends_the_evaluation_with_the_reason(job) -> None:
    services, queue, _, manifest = job
    services.deployer.fail = "the model's format cannot be served"
    fine_tuned(services, queue, manifest)
    on_run_event(services, completed_event())
    evaluate(services, queue)
    assert failed_evaluation(services) == "the deployment job1-distilled failed: the model's format cannot be served"
    assert sorted(services.deployer.deleted) == ["base", "distilled"]
    from shared.cli.show import summary

    shown = summary(read_record(services.store, PATHS), "jobs/job1")
    assert "evaluation failed:" in shown and "the fine-tuned model job1-ft-model is kept" in shown


def test_a_deployment_never_ready_times_out_and_is_removed(job) -> None:
    services, queue, _, manifest = job
    services.deployer.creating = 10**6
    manifest["evaluation"]["deploy_timeout_minutes"] = 0.001
    fine_tuned(services, queue, manifest)
    on_run_event(services, completed_event())
    services.settings = Settings(evaluation_poll_seconds=0.02)
    evaluate_until_over(services, queue)
    assert "was not ready after 0.001 minutes" in failed_evaluation(services)
    assert sorted(services.deployer.deleted) == ["base", "distilled"]


def evaluate_until_over(services: Services, queue: LocalQueue) -> None:
    """Deliver evaluation messages, scheduled ones as they fall due, until the job is no longer evaluating."""
    import time

    deadline = time.monotonic() + 30
    while record(services)["state"] == "evaluating" and time.monotonic() < deadline:
        evaluate(services, queue)
        time.sleep(0.01)


@pytest.mark.parametrize("fault,params", [(Fault.SERVER_ERROR, {"status": 500}), (Fault.HANG, {"seconds": 3}),
                                          (Fault.INVALID_JSON, {})])
def test_a_student_endpoint_that_errors_hangs_or_answers_garbage_fails_the_evaluation(job, fault, params) -> None:
    services, queue, student, manifest = job
    manifest["evaluation"]["timeout_seconds"] = 0.5
    if fault is Fault.INVALID_JSON:  # a reply that is not a chat completion at all
        garbage = GarbageServer().start()
        services.deployer.url = garbage.url
    else:
        student.inject(fault, times=10**6, **params)
    fine_tuned(services, queue, manifest)
    on_run_event(services, completed_event())
    evaluate(services, queue)
    error = failed_evaluation(services)
    assert error.startswith("the distilled student's endpoint failed on 12 of 12 rows (first: ")
    assert sorted(services.deployer.deleted) == ["base", "distilled"]
    assert services.store.read(PATHS.file("report.json")) is None


class GarbageServer:
    """An HTTP server that answers every request with an HTML page (a proxy's error page, say)."""

    def start(self) -> "GarbageServer":
        class Page(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                body = b"<html><body>502 Bad Gateway</body></html>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        return self


def test_a_base_student_that_fails_is_left_out_and_the_distilled_one_still_scored(job) -> None:
    services, queue, _student, manifest = job
    manifest["student"] = {"model": "azureml://registries/azureml-meta/models/Llama-3.2-1B-Instruct/versions/1"}
    with FakeTeacher() as broken:
        broken.inject(Fault.REFUSE, times=10**6, status=404)
        manifest["evaluation"]["base_endpoint"] = broken.base_url
        fine_tuned(services, queue, manifest)
        on_run_event(services, completed_event())
        evaluate(services, queue)
    evaluation = record(services)["evaluation"]
    assert set(evaluation["scores"]) == {"teacher", "distilled"}
    assert services.deployer.deployed == {"distilled": "job1-ft-model"}  # a registry base is never deployed
    report = read_json(services.store, PATHS.file("report.json"))
    assert report["notes"][0].startswith("the base student's endpoint failed on 12 of 12 rows")


def test_a_named_endpoint_is_asked_with_its_key_and_nothing_is_deployed(job) -> None:
    services, queue, student, manifest = job
    manifest["evaluation"] |= {"endpoint": student.base_url, "key_setting": "STUDENT_KEY", "model": "my-student"}
    fine_tuned(services, queue, manifest)
    on_run_event(services, completed_event())
    evaluate(services, queue)
    assert record(services)["evaluation"]["scores"]["distilled"] == 1.0
    assert student.last_credential == ENDPOINT_KEY and student.last_body["model"] == "my-student"
    assert services.deployer.looks["distilled"] == 0 and services.deployer.deleted == []
    assert ENDPOINT_KEY not in every_stored_byte(services)


@pytest.mark.parametrize("evaluation,output_model", [({"deploy": "none"}, "job1-ft-model"), ({}, None)])
def test_no_evaluation_without_a_trained_model_or_when_turned_off(job, evaluation, output_model) -> None:
    services, queue, _, manifest = job
    manifest["evaluation"] = evaluation
    services.finetuner.state = lambda name: RunState(name, "Completed", output_model=output_model)
    fine_tuned(services, queue, manifest)
    on_run_event(services, completed_event())
    done = record(services)
    assert done["state"] == "succeeded" and "evaluation" not in done
    assert evaluate(services, queue) == []


def test_a_dead_lettered_evaluation_ends_it_with_the_reason(job) -> None:
    services, queue, _, manifest = job
    services.deployer.creating = 10**6
    fine_tuned(services, queue, manifest)
    on_run_event(services, completed_event())
    [message] = queue.receive("evaluations", 1)
    on_evaluation(services, message.body)  # deploying: looked at again later
    letter = service_bus_message(message.body, message.message_id, 10,
                                 dead_letter=("MaxDeliveryCountExceeded", "lock lost"))
    assert on_dead_letter(services, "evaluations", letter, "MaxDeliveryCountExceeded", "lock lost", 10) == "job1"
    assert "the evaluation message was dead-lettered after 10 deliveries" in failed_evaluation(services)
    assert sorted(services.deployer.deleted) == ["base", "distilled"]


def test_a_message_of_an_earlier_attempt_is_ignored(job) -> None:
    services, queue, student, manifest = job
    fine_tuned(services, queue, manifest)
    on_run_event(services, completed_event())
    assert on_evaluation(services, {"job": "job1", "attempt": "0", "polls": 0}) is None
    assert record(services)["state"] == "evaluating" and student.requests_total == 0
