"""AzureML's run events: what one means for a Distill job (`interpret`), and one built as AzureML would send it
(`run_event`, for the local fine-tuners, so a local job ends through the same path as in Azure). No Azure imports.

`interpret` is stateless: the same event gives the same answer every time. Event Grid may deliver an event twice
or out of order, so the caller (the pipeline) decides what a repeat means by checking the job record.

Run events carry the run's properties, which may hold secrets (the SDK once wrote a teacher key there): this
module never reads `runProperties` and never logs a payload, only an event's id and type.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.ports import TERMINAL_STATUSES, FineTuneRequest

logger = logging.getLogger(__name__)

RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
JOB_TAG = "distill_job"  # the run tag naming the Distill job a run belongs to
ERROR_FIELD = "runError"  # a reason Distill's own publishers add to a failed run's data (never a payload)
MAX_ERROR_CHARS = 500

# Every AzureML run status, keyed by its lower-case form: events may spell a status in any case ("failed").
_STATUSES = {s.lower(): s for s in (
    "NotStarted", "Starting", "Provisioning", "Preparing", "Queued", "Running", "Finalizing", "CancelRequested",
    "Completed", "Failed", "Canceled", "NotResponding", "Paused", "Unknown",
)}


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """A Distill job's fine-tune run reached a terminal status.

    `output_model` stays None: run events never name the registered model; `FineTuner.state(run_id)` does.
    `error` is the reason a Distill publisher gave for a failure (the local export); AzureML events carry none.
    """

    job_id: str
    run_id: str
    status: str  # AzureML casing: Completed, Failed, Canceled, ...
    terminal: bool
    output_model: str | None
    experiment: str | None
    error: str | None = None


def interpret(event: Mapping[str, Any], *, workspace_topic: str | None) -> RunUpdate | None:
    """The update an event carries for one of our runs, or None when it is not ours or not final.

    `event` is a plain dict with id, topic, subject, eventType (or event_type) and data. Ignored: another
    workspace's events (unless `workspace_topic` is None), event types other than RunStatusChanged and
    RunCompleted, runs without the `distill_job` tag, and statuses that are not terminal.
    """
    event_type = _text(event.get("eventType", event.get("event_type")))
    if event_type.lower() not in (RUN_STATUS_CHANGED.lower(), RUN_COMPLETED.lower()):
        return _ignore(event, "not a run status event")
    if workspace_topic is not None and _text(event.get("topic")).strip().lower() != workspace_topic.strip().lower():
        return _ignore(event, "another workspace")
    data = event.get("data")
    data = data if isinstance(data, Mapping) else {}
    job_id = _tag(data, JOB_TAG)
    if not job_id:
        return _ignore(event, "not a Distill run")
    status = "Completed" if event_type.lower() == RUN_COMPLETED.lower() else normalise_status(data.get("runStatus"))
    if status not in TERMINAL_STATUSES:
        return _ignore(event, "status not terminal")
    return RunUpdate(
        job_id=job_id,
        run_id=_text(data.get("runId")) or _run_from_subject(_text(event.get("subject"))),
        status=status,
        terminal=True,
        output_model=None,
        experiment=_text(data.get("experimentName")) or None,
        error=_error(data) if status != "Completed" else None,
    )


def normalise_status(status: Any) -> str:
    """A run status in AzureML casing ("failed" -> "Failed"); an unknown status is returned as given."""
    text = _text(status).strip()
    return _STATUSES.get(text.lower(), text)


def from_functions_event(event: Any) -> dict[str, Any]:
    """The plain dict `interpret` takes, from an `azure.functions.EventGridEvent` (duck-typed, no import)."""
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "data": event.get_json(),
    }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _tag(data: Mapping[str, Any], key: str) -> str:
    tags = data.get("runTags")
    return _text(tags.get(key)).strip() if isinstance(tags, Mapping) else ""


def _run_from_subject(subject: str) -> str:
    """`experiments/<experiment id>/runs/<run id>` -> the run id ("" when the subject has another shape)."""
    parts = subject.strip("/").split("/")
    return parts[3] if len(parts) == 4 and parts[0] == "experiments" and parts[2] == "runs" else ""


def _error(data: Mapping[str, Any]) -> str | None:
    return _text(data.get(ERROR_FIELD))[:MAX_ERROR_CHARS] or None


def _ignore(event: Mapping[str, Any], reason: str) -> None:
    logger.debug("ignoring event %s: %s", _text(event.get("id")) or "?", reason)
    return None


def run_event(request: FineTuneRequest, *, status: str, error: str | None, workspace_topic: str,
              run_type: str) -> dict[str, Any]:
    """The Event Grid event (Event Grid schema) an AzureML workspace sends when a run's status changes."""
    experiment_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"distill:experiment:{request.experiment_name}"))
    data: dict[str, Any] = {
        "experimentId": experiment_id,
        "experimentName": request.experiment_name,
        "runId": request.name,
        "runType": run_type,
        "runTags": {**request.tags, JOB_TAG: request.job_id},
        "runProperties": {},
        "runStatus": status,
    }
    if error:
        data[ERROR_FIELD] = error
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{workspace_topic}/runs/{request.name}/{status}")),
        "topic": workspace_topic,
        "subject": f"experiments/{experiment_id}/runs/{request.name}",
        "eventType": RUN_STATUS_CHANGED,
        "eventTime": datetime.now(UTC).isoformat(),
        "data": data,
        "dataVersion": "",  # as AzureML sends it
        "metadataVersion": "1",
    }
