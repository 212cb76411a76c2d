"""The Service Bus sender, against a fake client whose batches are the SDK's own; one live test against a real queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import azure.functions as func
import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusMessageBatch, ServiceBusReceiver
from azure.servicebus.exceptions import MessageSizeExceededError

from shared.ports import OutgoingMessage
from shared.queueing import BadMessage, decode_body
from shared.queueing.servicebus import ServiceBusQueueSender

ROOT = Path(__file__).resolve().parents[1]
FAKE_CONNECTION = "Endpoint=sb://distill-test.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0"


class RecordingBatch(ServiceBusMessageBatch):
    """The SDK's own batch (its size accounting, its MessageSizeExceededError) that also remembers what it took."""

    def __init__(self, max_size_in_bytes: int) -> None:
        super().__init__(max_size_in_bytes=max_size_in_bytes)
        self.added: list[ServiceBusMessage] = []

    def add_message(self, message: ServiceBusMessage) -> None:
        super().add_message(message)
        self.added.append(message)


class FakeSender:
    """Hands out real batches and records each one sent; anything but a batch is refused."""

    def __init__(self, max_batch_bytes: int) -> None:
        self.max_batch_bytes = max_batch_bytes
        self.sent: list[RecordingBatch] = []

    def create_message_batch(self, max_size_in_bytes: int | None = None) -> RecordingBatch:
        return RecordingBatch(max_size_in_bytes or self.max_batch_bytes)

    def send_messages(self, message: ServiceBusMessageBatch, *, timeout: float | None = None) -> None:
        assert isinstance(message, RecordingBatch)
        self.sent.append(message)


class FakeClient:
    def __init__(self, max_batch_bytes: int = 256 * 1024) -> None:
        self.max_batch_bytes = max_batch_bytes
        self.senders: dict[str, FakeSender] = {}
        self.opened: list[str] = []
        self.closed = False

    def get_queue_sender(self, queue_name: str) -> FakeSender:
        assert not self.closed
        self.opened.append(queue_name)
        return self.senders.setdefault(queue_name, FakeSender(self.max_batch_bytes))

    def close(self) -> None:
        self.closed = True


def sent_messages(client: FakeClient, queue: str) -> list[list[ServiceBusMessage]]:
    return [batch.added for batch in client.senders[queue].sent]


def body_of(message: ServiceBusMessage) -> dict:
    return json.loads(b"".join(message.body))


def test_each_message_goes_out_as_json_with_its_id_and_content_type():
    client = FakeClient()
    sender = ServiceBusQueueSender(client)
    sender.send("shards", [OutgoingMessage({"job": "nli-1", "shard": 0}, "nli-1/0"),
                           OutgoingMessage({"job": "nli-1", "shard": 1, "note": "é"}, "nli-1/1")])
    [batch] = sent_messages(client, "shards")
    assert [m.message_id for m in batch] == ["nli-1/0", "nli-1/1"]
    assert [body_of(m) for m in batch] == [{"job": "nli-1", "shard": 0}, {"job": "nli-1", "shard": 1, "note": "é"}]
    assert {m.content_type for m in batch} == {"application/json"}
    assert {m.scheduled_enqueue_time_utc for m in batch} == {None}


def test_scheduled_message_carries_its_time_in_utc():
    client = FakeClient()
    when = datetime(2030, 1, 2, 5, 30, tzinfo=timezone(timedelta(hours=2)))
    ServiceBusQueueSender(client).send("poll", [OutgoingMessage({"run": "r1"}, "poll-r1-1", when),
                                                OutgoingMessage({"run": "r2"}, "now-r2")])
    [batch] = sent_messages(client, "poll")
    assert [(m.message_id, m.scheduled_enqueue_time_utc) for m in batch] == [
        ("poll-r1-1", datetime(2030, 1, 2, 3, 30, tzinfo=UTC)),
        ("now-r2", None),
    ]


def test_naive_scheduled_time_is_refused_before_anything_is_sent():
    client = FakeClient()
    with pytest.raises(ValueError, match="timezone-aware"):
        ServiceBusQueueSender(client).send("poll", [OutgoingMessage({}, "a", datetime(2030, 1, 1))])
    assert client.opened == []


def test_a_new_batch_starts_when_the_next_message_does_not_fit():
    client = FakeClient(max_batch_bytes=1024)
    messages = [OutgoingMessage({"text": "x" * 300}, f"m{i}") for i in range(5)]
    ServiceBusQueueSender(client).send("rows", messages)
    batches = sent_messages(client, "rows")
    assert [[m.message_id for m in batch] for batch in batches] == [["m0", "m1"], ["m2", "m3"], ["m4"]]
    assert all(batch.size_in_bytes <= 1024 for batch in client.senders["rows"].sent)


def test_a_message_too_large_for_an_empty_batch_raises():
    client = FakeClient(max_batch_bytes=1024)
    with pytest.raises(MessageSizeExceededError):
        ServiceBusQueueSender(client).send("rows", [OutgoingMessage({"text": "x" * 2000}, "big")])
    assert client.senders["rows"].sent == []


def test_sender_per_queue_is_kept_across_calls_and_close_closes_the_client():
    client = FakeClient()
    sender = ServiceBusQueueSender(client)
    sender.send("a", [OutgoingMessage({}, "1")])
    sender.send("a", [OutgoingMessage({}, "2")])
    sender.send("b", [OutgoingMessage({}, "3")])
    sender.send("c", [])
    assert client.opened == ["a", "b"]
    assert [[m.message_id for m in batch] for batch in sent_messages(client, "a")] == [["1"], ["2"]]
    sender.close()
    assert client.closed


def test_from_connection_string_builds_a_client_without_connecting():
    sender = ServiceBusQueueSender.from_connection_string(FAKE_CONNECTION)
    assert sender._client.fully_qualified_namespace == "distill-test.servicebus.windows.net"
    sender.close()


def test_from_namespace_builds_a_client_without_connecting():
    sender = ServiceBusQueueSender.from_namespace("distill-test.servicebus.windows.net", credential=object())
    assert sender._client.fully_qualified_namespace == "distill-test.servicebus.windows.net"
    sender.close()


class StubCredential:
    pass


@pytest.fixture
def client_args(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """The (namespace, credential) of every Service Bus client the sender builds."""
    import azure.identity

    import shared.queueing.servicebus as servicebus

    built: list[tuple[str, object]] = []
    monkeypatch.setattr(servicebus, "ServiceBusClient", lambda ns, credential: built.append((ns, credential)))
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", StubCredential)
    return built


def test_from_namespace_uses_the_given_credential(client_args: list[tuple[str, object]]):
    credential = object()
    ServiceBusQueueSender.from_namespace("ns.servicebus.windows.net", credential)
    assert client_args == [("ns.servicebus.windows.net", credential)]


def test_from_namespace_defaults_to_default_azure_credential(client_args: list[tuple[str, object]]):
    ServiceBusQueueSender.from_namespace("ns.servicebus.windows.net")
    assert [(ns, type(credential)) for ns, credential in client_args] == [("ns.servicebus.windows.net", StubCredential)]


def test_importing_the_sender_does_not_import_azure_identity():
    code = "import sys, shared.queueing.servicebus; print('azure.identity' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "False"


def test_decode_body_reads_what_the_sender_wrote():
    client = FakeClient()
    body = {"job": "nli-1", "rows": [1, 2], "note": "é"}
    ServiceBusQueueSender(client).send("q", [OutgoingMessage(body, "id")])
    [[sent]] = sent_messages(client, "q")
    trigger = func.ServiceBusMessage(body=b"".join(sent.body), content_type=sent.content_type)
    assert decode_body(trigger) == body


@pytest.mark.parametrize(("raw", "problem"), [
    (b'{"job": ', "is not JSON"),
    (b"\xff\xfe\xfa", "is not JSON"),
    (b"[1, 2]", "not an object"),
])
def test_decode_body_refuses_what_is_not_a_json_object(raw: bytes, problem: str):
    with pytest.raises(BadMessage, match=problem) as info:
        decode_body(func.ServiceBusMessage(body=raw))
    assert isinstance(info.value, ValueError)


@pytest.mark.live
def test_live_send_and_receive_on_a_real_queue():
    connection = os.environ.get("DISTILL_LIVE_SERVICEBUS_CONNECTION")
    queue = os.environ.get("DISTILL_LIVE_SERVICEBUS_QUEUE")
    if not (connection and queue):
        pytest.skip("live: set DISTILL_LIVE_SERVICEBUS_CONNECTION and DISTILL_LIVE_SERVICEBUS_QUEUE to run")
    message_id = f"distill-live-{uuid.uuid4().hex}"
    sender = ServiceBusQueueSender.from_connection_string(connection)
    try:
        sender.send(queue, [OutgoingMessage({"probe": message_id}, message_id)])
    finally:
        sender.close()
    with ServiceBusClient.from_connection_string(connection) as client, client.get_queue_receiver(queue) as receiver:
        body, content_type = _receive_one(receiver, message_id)
    assert (body, content_type) == ({"probe": message_id}, "application/json")


def _receive_one(receiver: ServiceBusReceiver, message_id: str, timeout: float = 60.0) -> tuple[dict, str]:
    """Complete the message with this id and return its body and content type; abandon any other (so the live queue
    should be one of its own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in receiver.receive_messages(max_message_count=10, max_wait_time=5):
            if message.message_id != message_id:
                receiver.abandon_message(message)
                continue
            receiver.complete_message(message)
            return json.loads(b"".join(message.body)), message.content_type
    pytest.fail(f"message {message_id} did not arrive within {timeout:.0f} s")
