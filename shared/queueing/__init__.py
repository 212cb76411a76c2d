"""The message queue behind `shared.ports.QueueSender`: Service Bus on Azure, an embedded SQLite queue locally.

`shared.queueing.servicebus.ServiceBusQueueSender` sends to Azure Service Bus; `shared.queueing.local.LocalQueue`
sends and receives on one machine with the same semantics (peek-lock, duplicate detection, scheduled delivery,
dead-lettering).
This module holds what both sides share and stays light: it imports neither backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.ports import OutgoingMessage


class BadMessage(ValueError):
    """A received message whose body is not a JSON object; retrying it cannot help."""


class TriggerMessage(Protocol):
    """What `decode_body` needs of a message: `azure.functions.ServiceBusMessage` has it."""

    def get_body(self) -> bytes: ...


def encode_body(body: Mapping[str, Any]) -> str:
    """A message body as the JSON text that goes on the queue."""
    return json.dumps(dict(body))


def decode_body(message: TriggerMessage) -> dict[str, Any]:
    """The JSON object in a Functions trigger message's body; BadMessage when it is not one."""
    raw = message.get_body()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage(f"{_label(message)} body is not JSON ({exc}): {raw[:80]!r}") from exc
    if not isinstance(body, dict):
        raise BadMessage(f"{_label(message)} body is JSON but not an object: {raw[:80]!r}")
    return body


def scheduled_utc(message: OutgoingMessage) -> datetime | None:
    """The message's delivery time in UTC; ValueError for a naive datetime, which would be read as local time."""
    when = message.scheduled_at
    if when is None:
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"message {message.message_id}: scheduled_at must be timezone-aware, got {when.isoformat()}")
    return when.astimezone(UTC)


def _label(message: TriggerMessage) -> str:
    message_id = getattr(message, "message_id", None)
    return f"message {message_id}:" if message_id else "message:"
