"""ExportOnlyFineTuner: the local stand-in exports the files, records the run, and sends AzureML's event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from shared.finetune.run_events import RUN_STATUS_CHANGED, RunUpdate, interpret
from shared.local.export_only import DESCRIPTION, ExportOnlyFineTuner
from shared.ports import Blob, Conflict, FineTuneRequest, RunState

TOPIC = "local://distill/workspace"
JOB = "nli-1a2b3c4d5e6f"
RUN = "distill-nli-1a2b3c4d5e6f-ft"
TRAIN = b'{"messages": [{"role": "system", "content": "s"}]}\n'
VALIDATION = b'{"messages": [{"role": "system", "content": "v"}]}\n'


class MemoryStore:
    """An in-memory BlobStore with ETags and conditional writes."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = {path: (data, "0") for path, data in blobs.items()}
        self.writes = 0

    def read(self, path: str) -> Blob | None:
        return Blob(*self.blobs[path]) if path in self.blobs else None

    def write(self, path: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        current = self.blobs.get(path)
        if (if_absent and current) or (if_match is not None and (not current or current[1] != if_match)):
            raise Conflict(path)
        self.writes += 1
        self.blobs[path] = (data, str(self.writes))
        return str(self.writes)

    def download_to(self, path: str, dest: Path) -> bool:
        if path not in self.blobs:
            return False
        dest.write_bytes(self.blobs[path][0])
        return True

    def upload_from(self, path: str, src: Path) -> str:
        return self.write(path, src.read_bytes())

    def list(self, prefix: str) -> Iterator[str]:
        return iter(sorted(p for p in self.blobs if p.startswith(prefix)))

    def delete(self, path: str) -> bool:
        return self.blobs.pop(path, None) is not None


def request(**changes: Any) -> FineTuneRequest:
    values: dict[str, Any] = {
        "name": RUN,
        "job_id": JOB,
        "student_model": "SmolLM2-135M-Instruct",
        "train_path": f"jobs/{JOB}/train.jsonl",
        "validation_path": f"jobs/{JOB}/validation.jsonl",
        "experiment_name": "distill",
        "tags": {"distill_task": "NLI"},
    }
    return FineTuneRequest(**{**values, **changes})


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore({f"jobs/{JOB}/train.jsonl": TRAIN, f"jobs/{JOB}/validation.jsonl": VALIDATION})


@pytest.fixture
def published() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def tuner(store: MemoryStore, published: list[dict[str, Any]]) -> ExportOnlyFineTuner:
    return ExportOnlyFineTuner(store, published.append, TOPIC)


def test_start_exports_both_files(tuner: ExportOnlyFineTuner, store: MemoryStore) -> None:
    assert tuner.start(request()) == RUN

    assert store.read(f"jobs/{JOB}/export/train.jsonl").data == TRAIN
    assert store.read(f"jobs/{JOB}/export/validation.jsonl").data == VALIDATION


def test_the_run_is_recorded_as_export_only(tuner: ExportOnlyFineTuner, store: MemoryStore) -> None:
    tuner.start(request())

    run = json.loads(store.read(f"jobs/{JOB}/export/run.json").data)
    assert run["description"] == DESCRIPTION == "export only: no training ran"
    assert (run["name"], run["job_id"], run["status"], run["output_model"], run["error"]) == (
        RUN, JOB, "Completed", None, None)


def test_the_completed_event_has_azureml_shape(tuner: ExportOnlyFineTuner, published: list[dict[str, Any]]) -> None:
    tuner.start(request())

    [sent] = published
    data = sent["data"]
    assert sent["eventType"] == RUN_STATUS_CHANGED
    assert sent["topic"] == TOPIC
    assert sent["subject"] == f"experiments/{data['experimentId']}/runs/{RUN}"
    assert datetime.fromisoformat(sent["eventTime"]).tzinfo is not None
    assert isinstance(sent["id"], str) and "dataVersion" in sent
    assert data["runStatus"] == "Completed"
    assert (data["runId"], data["experimentName"], data["runProperties"]) == (RUN, "distill", {})
    assert data["runTags"] == {"distill_job": JOB, "distill_task": "NLI"}
    assert isinstance(data["runType"], str)
    assert json.loads(json.dumps(sent)) == sent  # plain JSON, as Event Grid carries it


def test_the_event_finishes_the_job_through_interpret(tuner: ExportOnlyFineTuner,
                                                      published: list[dict[str, Any]]) -> None:
    tuner.start(request())

    assert interpret(published[0], workspace_topic=TOPIC) == RunUpdate(
        job_id=JOB, run_id=RUN, status="Completed", terminal=True, output_model=None, experiment="distill")


def test_a_request_tag_cannot_take_over_distill_job(tuner: ExportOnlyFineTuner,
                                                    published: list[dict[str, Any]]) -> None:
    tuner.start(request(tags={"distill_job": "someone-else"}))

    assert published[0]["data"]["runTags"] == {"distill_job": JOB}


def test_a_missing_train_blob_fails_the_run(published: list[dict[str, Any]]) -> None:
    store = MemoryStore({f"jobs/{JOB}/validation.jsonl": VALIDATION})
    tuner = ExportOnlyFineTuner(store, published.append, TOPIC)

    assert tuner.start(request()) == RUN

    [sent] = published
    assert sent["data"]["runStatus"] == "Failed"
    assert sent["data"]["runError"] == f"missing blob: jobs/{JOB}/train.jsonl"
    assert sent["data"]["runProperties"] == {}
    update = interpret(sent, workspace_topic=TOPIC)
    assert update is not None and (update.status, update.error) == ("Failed", f"missing blob: jobs/{JOB}/train.jsonl")
    assert tuner.state(RUN) == RunState(name=RUN, status="Failed", output_model=None,
                                        error=f"missing blob: jobs/{JOB}/train.jsonl")
    assert not any(path.startswith(f"jobs/{JOB}/export/") and path.endswith(".jsonl") for path in store.blobs)


def test_a_second_start_exports_and_publishes_nothing(tuner: ExportOnlyFineTuner, store: MemoryStore,
                                                      published: list[dict[str, Any]]) -> None:
    tuner.start(request())
    writes = store.writes

    assert tuner.start(request()) == RUN
    assert store.writes == writes
    assert len(published) == 1


def test_a_start_that_loses_the_race_does_not_publish(tuner: ExportOnlyFineTuner, store: MemoryStore,
                                                      published: list[dict[str, Any]]) -> None:
    original_write = store.write

    def racing_write(path: str, data: bytes, **conditions: Any) -> str:
        if path.endswith(f"/{RUN}.json") and conditions.get("if_absent"):
            original_write(path, data)  # the other start got there first
        return original_write(path, data, **conditions)

    store.write = racing_write  # type: ignore[method-assign]

    assert tuner.start(request()) == RUN
    assert published == []


def test_state_reads_the_record(tuner: ExportOnlyFineTuner) -> None:
    tuner.start(request())

    assert tuner.state(RUN) == RunState(name=RUN, status="Completed", output_model=None, error=None)


def test_state_of_an_unknown_run_raises_lookup_error(tuner: ExportOnlyFineTuner) -> None:
    with pytest.raises(LookupError, match="no export-only run named nope"):
        tuner.state("nope")


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "..", "-leading"])
def test_a_name_that_is_not_a_path_segment_is_refused(tuner: ExportOnlyFineTuner, name: str) -> None:
    with pytest.raises(ValueError, match="run name"):
        tuner.start(request(name=name))


def test_a_start_after_the_job_started_over_exports_and_publishes_again(store: MemoryStore) -> None:
    published: list[dict[str, Any]] = []
    tuner = ExportOnlyFineTuner(store, published.append, TOPIC)
    tuner.start(request())
    for path in [p for p in store.blobs if p.startswith(f"jobs/{JOB}/export/")]:
        del store.blobs[path]  # `distill run --restart`: the job's folder is new; the run index outlives it
    tuner.start(request())
    assert len(published) == 2 and published[1]["data"]["runStatus"] == "Completed"
    assert store.read(f"jobs/{JOB}/export/run.json") is not None
