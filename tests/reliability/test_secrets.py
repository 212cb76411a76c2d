"""Secrets: a job run with recognisable fake keys (the teacher key in an environment variable, the storage account
key in the storage connection) leaves them in no blob, message, log line, event or fine-tune job property."""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from azurite import ACCOUNT_KEY
from reliability_helpers import jsonl, put_job, qa_manifest, qa_rows, qa_teacher, run_job, tally
from test_azureml_finetuner import FakeMLClient
from test_pipeline import run_event

from shared.finetune.azureml import AzureMLFineTuner
from shared.jobs.blobs import read_json
from shared.jobs.paths import JobPaths
from shared.local.runtime import LOCAL_WORKSPACE
from shared.pipeline.run_events import on_run_event
from shared.queueing.local import LocalQueue
from shared.services import Services
from shared.settings import Settings
from shared.storage.azure_blob import AzureBlobStore
from shared.testkit.teacher import Fault

TEACHER_KEY = "sk-distill-FAKE-teacher-key-7f3a9c2e41b8"
KEY_SETTING = "DISTILL_RELIABILITY_TEACHER_KEY"


def test_no_key_leaks_anywhere(azurite_connection_string: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               caplog: pytest.LogCaptureFixture, figures) -> None:
    pytest.importorskip("azure.ai.ml", reason="azure-ai-ml is not installed: pip install azure-ai-ml")
    secrets = (TEACHER_KEY, ACCOUNT_KEY, azurite_connection_string)
    monkeypatch.setenv(KEY_SETTING, TEACHER_KEY)
    monkeypatch.setenv("DistillStorage", azurite_connection_string)
    sent: list[dict[str, Any]] = []
    real_send = LocalQueue.send

    def spy(queue: LocalQueue, name: str, messages: Any) -> None:
        sent.extend({"queue": name, "id": m.message_id, "body": m.body} for m in messages)
        real_send(queue, name, messages)

    monkeypatch.setattr(LocalQueue, "send", spy)
    caplog.set_level(logging.DEBUG)
    job = f"secrets-{uuid.uuid4().hex[:8]}"
    store = AzureBlobStore.from_connection_string(azurite_connection_string)
    client = FakeMLClient()
    train, answers = qa_rows(20, "T")
    validation, more = qa_rows(6, "V")
    with qa_teacher(answers | more) as teacher:
        teacher.inject(Fault.RATE_LIMIT, retry_after_ms=50)
        teacher.inject(Fault.SERVER_ERROR, status=500)
        teacher.inject(Fault.REFUSE, status=401, match=train[3]["messages"][1]["content"])
        manifest = qa_manifest(teacher.base_url, finetune=True, teacher={"key_setting": KEY_SETTING, "max_retries": 2})
        put_job(store, job, manifest, {"train.jsonl": jsonl(train), "validation.jsonl": jsonl(validation)})
        record = run_job(store, tmp_path / "q.db", job, environ=dict(os.environ),
                         finetuner=lambda store, publish, topic: AzureMLFineTuner(client, store))
        assert teacher.credentials == {TEACHER_KEY}  # the key was sent to the teacher, and only there
    assert record["state"] == "fine-tuning" and record["rejected"] == 1

    with LocalQueue(tmp_path / "q.db") as queue:
        services = Services(store=store, queue=queue, finetuner=AzureMLFineTuner(client, store),
                            settings=Settings(workspace_topic=LOCAL_WORKSPACE))
        foreign = run_event("Completed", topic=LOCAL_WORKSPACE.replace("distill-local", "elsewhere"), job=job,
                            run=f"{job}-ft")
        assert on_run_event(services, foreign) is None
        assert read_json(store, JobPaths("jobs", job).status)["state"] == "fine-tuning"
        mine = run_event("Completed", topic=LOCAL_WORKSPACE, job=job, run=f"{job}-ft")
        assert on_run_event(services, mine) == job
    assert read_json(store, JobPaths("jobs", job).status)["state"] == "succeeded"

    blobs = {path: store.read(path).data for prefix in (f"input/{job}/", f"jobs/{job}/") for path in store.list(prefix)}
    [submitted] = client.jobs.submitted
    scanned = {
        "blobs": b"\n".join(blobs.values()).decode("utf-8", "replace"),
        "messages": json.dumps(sent),
        "log lines": "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        "events": json.dumps([foreign, mine]),
        "fine-tune job": json.dumps(submitted._to_rest_object().as_dict(), default=str) + repr(submitted.properties),
        "data assets": b"\n".join(content for _, content in client.data.registered).decode(),
    }
    assert len(blobs) >= 10 and len(sent) == 2 and len(caplog.records) >= 5
    leaks = {(where, secret[:12]) for where, text in scanned.items() for secret in secrets if secret in text}
    assert leaks == set()
    counts = tally(store, job, {"train.jsonl": train, "validation.jsonl": validation})
    assert counts == {"rows_processed": 26, "rows_lost": 0, "rows_duplicated": 0}
    figures.record("secrets (teacher and storage keys)", faults_injected=3, **counts)
