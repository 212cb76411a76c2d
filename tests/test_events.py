"""Distill's own events: each transition of a job published once, in order, as a CloudEvent; kept in events.jsonl;
webhooks that are down never fail a job and what they missed is reported; the Event Grid publisher speaks the
SDK's wire format over real HTTP.

Receivers here are real HTTP servers that parse every request with the `cloudevents` SDK."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from shared.cli import main
from shared.jobs.events import TYPES, summary
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobRecord, JobState, new_record, update_record
from shared.local.samples import nli_pairs, nli_row
from shared.pipeline import events
from shared.ports import PublishFailed
from shared.services import Services
from shared.storage.local import LocalBlobStore

FIELDS = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"}


class Receiver:
    """A webhook: parses each POST as a CloudEvent; answers 503 while `down`, and to the next `fail_next` requests."""

    def __init__(self, *, batch: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self.down = False
        self.fail_next = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if outer.down or outer.fail_next > 0:
                    outer.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                headers = {name.lower(): value for name, value in self.headers.items()}
                if batch:  # Event Grid's wire format: a JSON array of structured CloudEvents
                    structured = {"content-type": "application/cloudevents+json"}
                    parsed = [from_http_event(HTTPMessage(structured, json.dumps(item).encode()))
                              for item in json.loads(body)]
                else:
                    parsed = [from_http_event(HTTPMessage(headers, body))]
                outer.events += [{**event.get_attributes(), "data": event.get_data()} for event in parsed]
                outer.headers = headers
                self.send_response(200)
                self.end_headers()

        self.headers: dict[str, str] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    served = Receiver()
    yield served
    served.close()


def nli_file(path: Path, rows: int) -> Path:
    pairs = nli_pairs(seed=4)
    path.write_text("".join(json.dumps(nli_row(*next(pairs))) + "\n" for _ in range(rows)))
    return path


def stored(home: Path, job: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    folder = home / "storage" / "jobs" / job
    lines = (folder / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], json.loads((folder / "status.json").read_text())


def test_each_transition_reaches_a_webhook_once_in_order(tmp_path: Path, receiver: Receiver,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DISTILL_EVENT_WEBHOOKS", receiver.url)
    train = nli_file(tmp_path / "train.jsonl", 120)  # three shards of 50 rows
    assert main(["run", "--task", "nli", "--train", str(train), "--teacher", "test", "--export-only",
                 "--job", "ev-1"]) == 0
    types = [event["type"].removeprefix("Distill.Job.") for event in receiver.events]
    assert types == ["Accepted", "Progress", "Progress", "Progress", "DatasetReady", "FineTuneStarted", "Succeeded"]
    percents = [e["data"]["progress"]["percent"] for e in receiver.events if e["type"].endswith("Progress")]
    assert percents[-1] == 100 and all(b - a >= 10 for a, b in zip([0, *percents], percents, strict=False))
    assert all(set(e) >= FIELDS and e["source"] == "/distill/local" and e["subject"] == "jobs/ev-1"
               for e in receiver.events)
    assert receiver.headers["content-type"].startswith("application/cloudevents+json")
    assert len({e["id"] for e in receiver.events}) == len(receiver.events)
    last = receiver.events[-1]["data"]
    assert last["state"] == "succeeded" and sum(last["accepted"].values()) == 120
    assert last["files"]["train"] == "jobs/ev-1/train.jsonl" and last["finetune"]["name"] == "ev-1-ft"
    kept, status = stored(tmp_path / "home", "ev-1")
    assert [e["id"] for e in kept] == [e["id"] for e in receiver.events]
    assert "outbox" not in status and "events_missed" not in status
    assert not (tmp_path / "home" / "storage" / "jobs" / "_active" / "ev-1").exists()  # over: unmarked
    capsys.readouterr()
    assert main(["events", "ev-1"]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [e["id"] for e in kept]
    assert main(["run", "--task", "nli", "--train", str(train), "--teacher", "test", "--export-only",
                 "--job", "ev-1"]) == 0  # run again: the job had ended, nothing new happens
    assert len(receiver.events) == 7
    assert main(["run", "--task", "nli", "--train", str(train), "--teacher", "test", "--export-only",
                 "--job", "ev-1", "--restart"]) == 0  # a new attempt: new ids
    assert len(receiver.events) == 14 and len({e["id"] for e in receiver.events}) == 14


def test_a_webhook_that_is_down_never_fails_the_job_and_what_it_missed_is_reported(
        tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DISTILL_EVENT_WEBHOOKS", receiver.url)
    receiver.down = True
    train = nli_file(tmp_path / "train.jsonl", 120)
    assert main(["run", "--task", "nli", "--train", str(train), "--teacher", "test", "--export-only",
                 "--job", "ev-down"]) == 0
    out = capsys.readouterr().out
    kept, status = stored(tmp_path / "home", "ev-down")
    missed = status["events_missed"]
    assert {m["id"] for m in missed} == {e["id"] for e in kept} and len(missed) == len(kept) == 7
    assert all(m["to"] == receiver.url for m in missed) and "HTTP 503" in missed[0]["error"]
    assert f"events: 7 not delivered to {receiver.url}" in out
    assert status["state"] == "succeeded" and receiver.events == []


def store_with_job(tmp_path: Path) -> tuple[Services, JobPaths]:
    from shared.queueing.local import LocalQueue

    store = LocalBlobStore(tmp_path / "store")
    services = Services(store=store, queue=LocalQueue(tmp_path / "q.db"), finetuner=None)  # type: ignore[arg-type]
    paths = JobPaths("jobs", "unit")
    store.write(paths.status, json.dumps(new_record("unit").to_json()).encode())
    return services, paths


class FailingPublisher:
    def __init__(self) -> None:
        self.calls = 0

    def publish(self, events: Any) -> list[dict[str, str]]:
        self.calls += 1
        raise PublishFailed("topic unreachable")


def test_a_failed_publish_keeps_the_events_for_the_next_flush_then_records_them_missed(tmp_path: Path) -> None:
    services, paths = store_with_job(tmp_path)
    services.publisher = FailingPublisher()
    update_record(services.store, paths, lambda r: r.plan("NLI", 4, {"total": 200}, "t" * 32))
    for attempt in range(1, events.MAX_TRIES):
        assert events.flush(services, "unit") == 0
        record = JobRecord.from_json(json.loads(services.store.read(paths.status).data))
        assert record.outbox and record.outbox[0]["tries"] == attempt and not record.events_missed
    assert events.flush(services, "unit") == 1
    record = JobRecord.from_json(json.loads(services.store.read(paths.status).data))
    assert not record.outbox and record.events_missed == [
        {"id": record.events_missed[0]["id"], "to": "the event topic", "error": "topic unreachable"}]
    kept = services.store.read(paths.events)
    assert kept is not None and len(kept.data.splitlines()) == 1  # kept once, however often it was tried


def test_event_ids_repeat_for_a_repeated_change_and_change_with_the_round() -> None:
    record = new_record("j")
    before = JobRecord.from_json(record.to_json())
    record.plan("NLI", 10, {"total": 500}, "t" * 32)
    record.queue_events(before, "jobs")
    again = JobRecord.from_json(before.to_json())
    again.plan("NLI", 10, {"total": 500}, "t" * 32)
    again.queue_events(before, "jobs")
    assert record.outbox and again.outbox and record.outbox[0]["id"] == again.outbox[0]["id"]
    record.state, record.round = JobState.BUDGET_SPENT, None
    resumed = JobRecord.from_json(record.to_json())
    resumed.resume_round([3])
    resumed.shard_done(3)
    assert resumed.round == 1
    entry = resumed.outbox[0] if resumed.outbox else {}
    assert entry["id"].endswith("-r0/Accepted")
    progress = JobRecord.from_json(resumed.to_json())
    progress.outbox = None
    progress.queue_events(JobRecord.from_json({**resumed.to_json(), "shards_done": []}), "jobs")
    assert progress.outbox and "-r1/Progress-" in progress.outbox[0]["id"]
    assert set(TYPES) >= {e["type"] for e in progress.outbox}


def sample_events(count: int) -> list[dict[str, Any]]:
    return [{"specversion": "1.0", "id": f"j/1-r0/Progress-{i}", "source": "/distill/app",
             "type": "Distill.Job.Progress", "subject": "jobs/j", "time": "2026-11-30T09:00:00.000Z",
             "datacontenttype": "application/json",
             "data": {"job": "j", "state": "labeling", "progress": {"percent": 10 * i}}} for i in range(1, count + 1)]


def test_the_event_grid_publisher_sends_the_sdks_cloud_events_over_http() -> None:
    from azure.core.credentials import AzureKeyCredential
    from azure.eventgrid import EventGridPublisherClient

    from shared.publishing.eventgrid import EventGridPublisher

    topic = Receiver(batch=True)
    try:
        client = EventGridPublisherClient(topic.url, AzureKeyCredential("topic-key-for-the-test"), retry_total=0)
        assert EventGridPublisher(client).publish(sample_events(2)) == []
    finally:
        topic.close()
    assert [e["id"] for e in topic.events] == ["j/1-r0/Progress-1", "j/1-r0/Progress-2"]
    assert topic.events[1]["data"]["progress"] == {"percent": 20} and topic.events[0]["subject"] == "jobs/j"
    assert topic.headers["aeg-sas-key"] == "topic-key-for-the-test"
    assert topic.headers["content-type"].startswith("application/cloudevents-batch+json")


def test_the_event_grid_publisher_raises_publish_failed_when_the_topic_refuses(receiver: Receiver) -> None:
    from azure.core.credentials import AzureKeyCredential
    from azure.eventgrid import EventGridPublisherClient

    from shared.publishing.eventgrid import EventGridPublisher

    receiver.down = True
    client = EventGridPublisherClient(receiver.url, AzureKeyCredential("k"), retry_total=0)
    with pytest.raises(PublishFailed, match="Event Grid refused or could not be reached"):
        EventGridPublisher(client).publish(sample_events(1))


LIVE_TOPIC = os.environ.get("DISTILL_LIVE_EVENTGRID_ENDPOINT")


@pytest.mark.live
@pytest.mark.skipif(not LIVE_TOPIC, reason="live: set DISTILL_LIVE_EVENTGRID_ENDPOINT (and DISTILL_LIVE_EVENTGRID_KEY, "
                    "or sign in with az login) to reach a real Event Grid topic")
def test_an_event_reaches_a_real_event_grid_topic() -> None:
    from azure.core.credentials import AzureKeyCredential

    from shared.publishing.eventgrid import EventGridPublisher

    key = os.environ.get("DISTILL_LIVE_EVENTGRID_KEY")
    publisher = EventGridPublisher.from_endpoint(LIVE_TOPIC or "", AzureKeyCredential(key) if key else None)
    assert publisher.publish(sample_events(1)) == []


def test_the_event_reference_shows_every_type_once_as_a_valid_cloud_event() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text()
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", doc, re.DOTALL)]
    assert sorted(e["type"] for e in examples) == sorted(TYPES)
    known = set(summary(JobRecord(job="j", state=JobState.SUCCEEDED, created=0.0), "jobs"))
    fields = {"job", "state", "task", "rows", "progress", "accepted", "rejected", "rejected_by_reason",
              "success_ratio", "tokens", "metrics", "budget", "reason", "errors", "finetune", "evaluation", "files"}
    for example in examples:
        event = from_http_event(HTTPMessage({"content-type": "application/cloudevents+json"},
                                            json.dumps(example).encode()))
        assert set(example) == FIELDS and event.get_subject() == "jobs/nli-demo"
        assert example["id"].startswith("nli-demo/") and set(example["data"]) <= fields >= known


def test_a_webhook_that_fails_for_a_moment_gets_the_event_on_a_later_try(tmp_path: Path, receiver: Receiver,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DISTILL_EVENT_WEBHOOKS", receiver.url)
    receiver.fail_next = 2  # the first event's first two tries
    train = nli_file(tmp_path / "train.jsonl", 80)
    assert main(["run", "--task", "nli", "--train", str(train), "--teacher", "test", "--no-finetune",
                 "--job", "ev-blip"]) == 0
    kept, status = stored(tmp_path / "home", "ev-blip")
    assert [e["id"] for e in receiver.events] == [e["id"] for e in kept] and "events_missed" not in status


@pytest.mark.parametrize("order", [list(range(10)), [9, 3, 0, 7, 1, 8, 2, 6, 4, 5]])
def test_progress_events_are_at_least_a_tenth_of_the_rows_apart(order: list[int]) -> None:
    record = new_record("p")
    record.plan("NLI", 10, {"total": 455, "per_shard": 50}, "t" * 32)  # nine shards of 50 rows, one of 5
    for shard in order:
        before = JobRecord.from_json(record.to_json())
        record.shard_done(shard)
        record.queue_events(before, "jobs")
    percents = [e["data"]["progress"]["percent"] for e in record.outbox or [] if e["type"] == "Distill.Job.Progress"]
    assert percents and all(b - a >= 10 for a, b in zip([0, *percents], percents, strict=False))
    done_rows = sum(50 if shard < 9 else 5 for shard in order)
    assert percents[-1] >= 100 * done_rows // 455 - 10  # the last one is within a tenth of the end
