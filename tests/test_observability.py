"""Traces, structured logs and metrics: one trace per job from ingest through the teacher call to aggregation."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from shared import tracing
from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobState
from shared.local.runtime import LocalRuntime
from shared.local.samples import write_nli_sample
from shared.ports import OutgoingMessage
from shared.queueing.local import LocalQueue
from shared.queueing.servicebus import to_servicebus_message
from shared.storage.local import LocalBlobStore
from shared.testkit.teacher import FakeTeacher, Fault, answers_from_jsonl

SECRET = "sk-distill-observability-secret-0123456789"


class TracedTeacher(FakeTeacher):
    """The test teacher, keeping the `traceparent` header of every request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.traceparents: list[str | None] = []

    def respond(self, body: dict[str, Any], headers: Mapping[str, str], path: str):
        with self._lock:
            self.traceparents.append(headers.get("traceparent"))
        return super().respond(body, headers, path)


def test_parse_accepts_w3c_traceparents_only() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    context = tracing.parse(good)
    assert context is not None and context.traceparent == good
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    for bad in (None, "", f"00-{trace}-{parent}", f"00-{'0' * 32}-{parent}-01", f"00-{trace}-{'0' * 16}-01",
                f"zz-{trace}-{parent}-01", f"00-{trace.upper()}x-{parent}-01"):
        assert tracing.parse(bad) is None


def test_spans_nest_in_one_trace_and_messages_carry_the_current_span() -> None:
    assert tracing.message_properties() == {}
    with tracing.span() as root:
        with tracing.span(tracing.message_properties()["traceparent"]) as child:
            assert child.trace_id == root.trace_id and child.span_id != root.span_id
        with tracing.span(trace_id="ab" * 16) as ignored:  # a current span wins over a stored trace id
            assert ignored.trace_id == root.trace_id
    with tracing.span(trace_id="ab" * 16) as stored:
        assert stored.trace_id == "ab" * 16
    assert tracing.current() is None


def test_queues_carry_application_properties(tmp_path: Path) -> None:
    properties = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    message = OutgoingMessage({"job": "j", "shard": 0}, message_id="j/shard/0", properties=properties)
    assert to_servicebus_message(message).application_properties == properties
    with LocalQueue(tmp_path / "q.db") as queue:
        queue.send("shards", [message])
        [received] = queue.receive("shards")
    assert received.properties == properties


def test_a_queue_file_from_before_properties_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, message_id TEXT "
                   "NOT NULL, body TEXT NOT NULL, enqueued_at REAL NOT NULL, visible_at REAL NOT NULL, delivery_count "
                   "INTEGER NOT NULL DEFAULT 0, lock_token TEXT UNIQUE, locked_until REAL)")
        db.execute("INSERT INTO messages (queue, message_id, body, enqueued_at, visible_at) "
                   "VALUES ('shards', 'old', '{\"job\": \"j\"}', 0, 0)")
    with LocalQueue(path) as queue:
        [old] = queue.receive("shards")
    assert old.body == {"job": "j"} and old.properties == {}


@pytest.fixture()
def traced_job(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """One job through the registered functions, the teacher behind a key, one 429 and one unusable reply."""
    data = tmp_path / "data"
    write_nli_sample(data, rows=60, validation_rows=40)
    store = LocalBlobStore(tmp_path / "storage")
    answers = answers_from_jsonl(data / "train.jsonl") | answers_from_jsonl(data / "validation.jsonl")
    caplog.set_level(logging.INFO)  # the libraries' lines too (openai, httpx)
    caplog.set_level(logging.DEBUG, logger="shared")
    with TracedTeacher(answers) as teacher:
        for name in ("train.jsonl", "validation.jsonl"):
            store.upload_from(f"input/traced/{name}", data / name)
        manifest = {"task": "nli", "training_file": "train.jsonl", "validation_file": "validation.jsonl",
                    "min_rows": 20, "teacher": {"kind": "openai_compatible", "url": teacher.base_url,
                                                "model": "distill-test-teacher", "key_setting": "TEACHER_KEY"}}
        store.write("input/traced/manifest.json", dumps(manifest))
        teacher.inject(Fault.RATE_LIMIT, retry_after_ms=1)
        teacher.inject(Fault.EMPTY, times=1)
        runtime = LocalRuntime(store, tmp_path / "queue.db", environ={"TEACHER_KEY": SECRET})
        try:
            runtime.blob_created("input/traced/manifest.json")
            runtime.drain(lambda: JobState(read_json(store, JobPaths("jobs", "traced").status)["state"]).final)
        finally:
            runtime.close()
    assert teacher.last_credential == SECRET
    return read_json(store, JobPaths("jobs", "traced").status), teacher, caplog.records


def test_one_trace_from_ingest_through_the_teacher_call_to_aggregation(traced_job) -> None:
    record, teacher, records = traced_job
    trace_id = record["trace_id"]
    assert record["state"] == "succeeded"
    assert len(teacher.traceparents) == 101  # 100 rows and one retried 429
    assert {tracing.parse(value).trace_id for value in teacher.traceparents} == {trace_id}
    by_module = {}
    for r in records:
        by_module.setdefault(r.name, set()).add(getattr(r, "trace_id", None))
    assert by_module["shared.pipeline.ingest"] == {trace_id}
    assert by_module["shared.pipeline.telemetry"] == {trace_id}  # shard metrics (teacher) and job metrics (aggregate)
    scopes = {r.metric_scope for r in records if hasattr(r, "metric_scope")}
    assert scopes == {"shard", "job"}


def test_logs_carry_ids_and_the_metrics_reach_the_record(traced_job) -> None:
    record, _, records = traced_job
    shard_metrics = [r for r in records if getattr(r, "metric_scope", None) == "shard"]
    assert sorted(r.shard for r in shard_metrics) == [0, 1] and {r.job_id for r in shard_metrics} == {"traced"}
    assert sum(r.metric_throttled for r in shard_metrics) == 1
    [rejected] = [r for r in records if getattr(r, "reason", None) == "empty"]
    assert rejected.job_id == "traced" and rejected.shard in (0, 1)
    assert re.fullmatch(r"[0-9a-f]{64}-\d+", rejected.row_id)
    assert rejected.row_id in rejected.getMessage()
    labelled = [r for r in records if r.levelno == logging.DEBUG and hasattr(r, "row_id")]
    assert len(labelled) == 99
    [job_metrics] = [r for r in records if getattr(r, "metric_scope", None) == "job"]
    assert job_metrics.metric_rows_accepted == 99 and job_metrics.metric_rows_rejected == 1
    metrics = record["metrics"]
    assert metrics["throttled"] == 1 and metrics["rows_accepted"] == 99 and metrics["rows_rejected"] == 1
    assert metrics["tokens_total"] == record["tokens"]["prompt"] + record["tokens"]["completion"] > 0
    assert "cost" not in metrics  # no prices set


def test_no_log_line_nor_blob_holds_the_teacher_key(traced_job, tmp_path: Path) -> None:
    _, _, records = traced_job
    assert records
    for r in records:
        line = json.dumps({**r.__dict__, "message": r.getMessage()}, default=str)
        assert SECRET not in line
    blobs = [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]
    assert blobs and not [p for p in blobs if SECRET.encode() in p.read_bytes()]


def test_cost_is_counted_when_prices_are_set() -> None:
    from shared.pipeline.telemetry import job_metrics
    from shared.settings import Settings

    settings = Settings.from_env({"DISTILL_PRICE_PROMPT_PER_1K": "0.5", "DISTILL_PRICE_COMPLETION_PER_1K": "1.5"})
    metrics = job_metrics({"train": 3, "prompt_tokens": 2000, "completion_tokens": 1000, "throttled": 2}, settings)
    assert metrics["cost"] == 2.5 and metrics["throttled"] == 2 and metrics["rows_accepted"] == 3


def test_a_span_is_opentelemetrys_current_context_too() -> None:
    from opentelemetry import trace  # installed with azure-ai-ml (azure-monitor-opentelemetry)

    with tracing.span() as context:
        current = trace.get_current_span().get_span_context()
        assert f"{current.trace_id:032x}" == context.trace_id and f"{current.span_id:016x}" == context.span_id
    assert not trace.get_current_span().get_span_context().is_valid
