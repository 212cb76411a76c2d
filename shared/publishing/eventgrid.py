"""Events published to an Event Grid custom topic as CloudEvents, with the `azure-eventgrid` SDK, signed in with the
app's managed identity (or a key, where a topic is reached with one).

A send that fails raises PublishFailed: the job's outbox keeps the events and the next flush sends them again, under
the same ids (shared.pipeline.events).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient

from shared.ports import PublishFailed


class EventGridPublisher:
    """`shared.ports.EventPublisher` for an Event Grid topic."""

    def __init__(self, client: EventGridPublisherClient) -> None:
        self._client = client

    @classmethod
    def from_endpoint(cls, endpoint: str, credential: Any = None) -> EventGridPublisher:
        """A publisher for the topic; `credential` defaults to the app's identity (DefaultAzureCredential)."""
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return cls(EventGridPublisherClient(endpoint, credential))

    def publish(self, events: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        try:
            self._client.send([as_cloud_event(event) for event in events])
        except AzureError as exc:
            raise PublishFailed(f"Event Grid refused or could not be reached: {type(exc).__name__}: {exc}") from exc
        return []


def as_cloud_event(event: Mapping[str, Any]) -> CloudEvent:
    """A structured CloudEvent dict (shared.jobs.events.cloud_event) as the SDK's CloudEvent."""
    return CloudEvent(source=event["source"], type=event["type"], data=event["data"], subject=event["subject"],
                      id=event["id"], time=datetime.fromisoformat(event["time"]),
                      datacontenttype=event["datacontenttype"], specversion=event["specversion"])
