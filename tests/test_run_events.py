"""interpret: which AzureML run events finish a Distill job, and which are ignored."""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from shared.finetune.run_events import RUN_COMPLETED, RUN_STATUS_CHANGED, RunUpdate, from_functions_event, interpret

TOPIC = ("/subscriptions/0000/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/distill-ws")
EXPERIMENT_ID = "0fa9dfaa-cba3-4fa7-b590-23e48548f5c1"
SECRET = "sk-live-0123456789abcdef"


def event(status: str | None = "Completed", *, event_type: str = RUN_STATUS_CHANGED, topic: str = TOPIC,
          tags: dict[str, str] | None = None) -> dict[str, Any]:
    """An AzureML run event as Event Grid delivers it (Event Grid schema)."""
    data: dict[str, Any] = {
        "experimentId": EXPERIMENT_ID,
        "experimentName": "distill",
        "runId": "distill-nli-1a2b3c4d5e6f-ft",
        "runType": None,
        "runTags": {"distill_job": "nli-1a2b3c4d5e6f"} if tags is None else tags,
        "runProperties": {"azureml.connection_information": f'{{"api_key": "{SECRET}"}}'},
    }
    if status is not None:
        data["runStatus"] = status
    return {
        "id": "831e1650-001e-001b-66ab-eeb76e069631",
        "topic": topic,
        "subject": f"experiments/{EXPERIMENT_ID}/runs/distill-nli-1a2b3c4d5e6f-ft",
        "eventType": event_type,
        "eventTime": "2026-01-02T03:04:05.6789Z",
        "data": data,
        "dataVersion": "",
        "metadataVersion": "1",
    }


def update(status: str) -> RunUpdate:
    return RunUpdate(job_id="nli-1a2b3c4d5e6f", run_id="distill-nli-1a2b3c4d5e6f-ft", status=status, terminal=True,
                     output_model=None, experiment="distill")


@pytest.mark.parametrize("status", ["Completed", "Failed", "Canceled", "NotResponding", "Paused"])
def test_a_terminal_status_finishes_the_job(status: str) -> None:
    assert interpret(event(status), workspace_topic=TOPIC) == update(status)


@pytest.mark.parametrize(("sent", "status"), [("failed", "Failed"), ("COMPLETED", "Completed"),
                                              ("canceled", "Canceled"), ("notresponding", "NotResponding")])
def test_status_casing_is_normalised(sent: str, status: str) -> None:
    assert interpret(event(sent), workspace_topic=TOPIC) == update(status)


@pytest.mark.parametrize("status", ["Running", "Queued", "Preparing", "Finalizing", "CancelRequested", "Unknown", "",
                                    "Exploded"])
def test_a_status_that_is_not_terminal_is_ignored(status: str) -> None:
    assert interpret(event(status), workspace_topic=TOPIC) is None


def test_run_completed_means_completed_without_a_run_status() -> None:
    assert interpret(event(None, event_type=RUN_COMPLETED), workspace_topic=TOPIC) == update("Completed")


def test_run_status_changed_without_a_run_status_is_ignored() -> None:
    assert interpret(event(None), workspace_topic=TOPIC) is None


def test_another_workspace_is_ignored() -> None:
    other = event(topic=TOPIC.replace("distill-ws", "other-ws"))

    assert interpret(other, workspace_topic=TOPIC) is None


def test_the_workspace_topic_is_compared_without_case() -> None:
    assert interpret(event(topic=TOPIC.lower()), workspace_topic=TOPIC.upper()) == update("Completed")


def test_any_workspace_is_accepted_when_none_is_configured() -> None:
    assert interpret(event(topic="/elsewhere"), workspace_topic=None) == update("Completed")


@pytest.mark.parametrize("tags", [{}, {"distill_task": "NLI"}, {"distill_job": ""}])
def test_a_run_without_the_distill_tag_is_ignored(tags: dict[str, str]) -> None:
    assert interpret(event(tags=tags), workspace_topic=TOPIC) is None


@pytest.mark.parametrize("event_type", ["Microsoft.MachineLearningServices.ModelRegistered",
                                        "Microsoft.Storage.BlobCreated", ""])
def test_other_event_types_are_ignored(event_type: str) -> None:
    assert interpret(event(event_type=event_type), workspace_topic=TOPIC) is None


def test_snake_case_event_type_is_accepted() -> None:
    snake = event("Failed")
    snake["event_type"] = snake.pop("eventType")

    assert interpret(snake, workspace_topic=TOPIC) == update("Failed")


@pytest.mark.parametrize("data", [None, "not a mapping", {"runStatus": "Completed", "runTags": ["distill_job"]}])
def test_malformed_data_is_ignored(data: Any) -> None:
    broken = event()
    broken["data"] = data

    assert interpret(broken, workspace_topic=TOPIC) is None


def test_the_run_id_falls_back_to_the_subject() -> None:
    no_run_id = event()
    del no_run_id["data"]["runId"]

    assert interpret(no_run_id, workspace_topic=TOPIC) == update("Completed")


def test_a_failure_reason_from_a_distill_publisher_is_kept() -> None:
    failed = event("Failed")
    failed["data"]["runError"] = "missing blob: jobs/nli-1a2b3c4d5e6f/train.jsonl"

    result = interpret(failed, workspace_topic=TOPIC)

    assert result is not None and result.error == "missing blob: jobs/nli-1a2b3c4d5e6f/train.jsonl"


def test_interpret_is_stateless_and_leaves_the_event_alone() -> None:
    original = event()
    before = copy.deepcopy(original)

    assert interpret(original, workspace_topic=TOPIC) == interpret(original, workspace_topic=TOPIC)
    assert original == before


def test_run_properties_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="shared.finetune.run_events")

    interpret(event("Running"), workspace_topic=TOPIC)
    interpret(event(topic="/elsewhere"), workspace_topic=TOPIC)
    interpret(event("Failed"), workspace_topic=TOPIC)

    assert caplog.records, "ignored events are logged by id"
    assert SECRET not in caplog.text and "runProperties" not in caplog.text


def test_a_duck_typed_functions_event_is_adapted() -> None:
    raw = event("Failed")
    received = SimpleNamespace(id=raw["id"], topic=raw["topic"], subject=raw["subject"], event_type=raw["eventType"],
                               get_json=lambda: raw["data"])

    assert interpret(from_functions_event(received), workspace_topic=TOPIC) == update("Failed")


def test_a_functions_event_becomes_the_dict_interpret_takes() -> None:
    func = pytest.importorskip("azure.functions", reason="azure-functions is not installed")
    raw = event("Canceled")
    received = func.EventGridEvent(id=raw["id"], data=raw["data"], topic=raw["topic"], subject=raw["subject"],
                                   event_type=raw["eventType"], event_time=datetime.now(UTC), data_version="")

    adapted = from_functions_event(received)

    assert adapted == {key: raw[key] for key in ("id", "topic", "subject", "eventType", "data")}
    assert interpret(adapted, workspace_topic=TOPIC) == update("Canceled")


def test_the_run_events_module_imports_no_azure_package() -> None:
    code = "import sys, shared.finetune.run_events; print(sorted(m for m in sys.modules if m.startswith('azure')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
