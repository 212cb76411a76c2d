"""Azure Service Bus behind `QueueSender`, on azure-servicebus.

Scheduled messages travel in the same batches as the others, with `scheduled_enqueue_time_utc` set: the SDK supports
both this and `ServiceBusSender.schedule_messages`, and documents the property for scheduling on an ordinary send;
`schedule_messages` only adds sequence numbers for cancelling, which Distill never does, and it has no batch size
check. Duplicate detection (the queue must have it enabled) drops a repeated `message_id` on either path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusMessageBatch, ServiceBusSender
from azure.servicebus.exceptions import MessageSizeExceededError

from shared.ports import OutgoingMessage
from shared.queueing import encode_body, scheduled_utc

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

CONTENT_TYPE = "application/json"


class ServiceBusQueueSender:
    """Sends to Service Bus queues through one client, and one sender per queue, kept open across calls.

    The SDK's clients are not thread-safe, so sends are serialized. Batches go out one by one: when a send fails after
    some batches went out, sending the same messages again is safe, since duplicate detection drops those already sent.
    """

    def __init__(self, client: ServiceBusClient) -> None:
        self._client = client
        self._senders: dict[str, ServiceBusSender] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_connection_string(cls, conn_str: str) -> ServiceBusQueueSender:
        """A sender authenticated by a connection string (shared access key)."""
        return cls(ServiceBusClient.from_connection_string(conn_str))

    @classmethod
    def from_namespace(cls, fully_qualified_namespace: str,
                       credential: TokenCredential | None = None) -> ServiceBusQueueSender:
        """A sender with an identity-based connection (`<name>.servicebus.windows.net`); DefaultAzureCredential
        when no credential is given."""
        return cls(ServiceBusClient(fully_qualified_namespace, credential or _default_credential()))

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        """Send messages in as few size-limited batches as they fit in."""
        if not messages:
            return
        outgoing = [to_servicebus_message(m) for m in messages]
        with self._lock:
            sender = self._sender(queue)
            for batch in _batches(sender, outgoing):
                sender.send_messages(batch)

    def close(self) -> None:
        """Close the client and every sender it opened."""
        with self._lock:
            self._senders.clear()
            self._client.close()

    def _sender(self, queue: str) -> ServiceBusSender:
        if queue not in self._senders:
            self._senders[queue] = self._client.get_queue_sender(queue_name=queue)
        return self._senders[queue]


def to_servicebus_message(message: OutgoingMessage) -> ServiceBusMessage:
    """The SDK message for one outgoing message: JSON body, its id for duplicate detection, its delivery time,
    its application properties."""
    return ServiceBusMessage(
        body=encode_body(message.body),
        message_id=message.message_id,
        content_type=CONTENT_TYPE,
        scheduled_enqueue_time_utc=scheduled_utc(message),
        application_properties=dict(message.properties) or None,
    )


def _batches(sender: ServiceBusSender, messages: Sequence[ServiceBusMessage]) -> Iterator[ServiceBusMessageBatch]:
    """Fill batches in order, starting a new one when the next message does not fit.

    A message too large even for an empty batch raises MessageSizeExceededError.
    """
    batch = sender.create_message_batch()
    for message in messages:
        try:
            batch.add_message(message)
        except MessageSizeExceededError:
            if not len(batch):
                raise
            yield batch
            batch = sender.create_message_batch()
            batch.add_message(message)
    if len(batch):
        yield batch


def _default_credential() -> TokenCredential:
    from azure.identity import DefaultAzureCredential  # here, so that key-based senders never import azure.identity

    return DefaultAzureCredential()
