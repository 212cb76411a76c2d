"""The embedded queue: Service Bus semantics on SQLite, across instances, threads and a killed process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.ports import OutgoingMessage
from shared.queueing.local import MAX_DELIVERY_COUNT_EXCEEDED, DeadLetter, LocalQueue, LockLost

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(tmp_path: Path, clock: FakeClock):
    with LocalQueue(tmp_path / "queue.db", lock_seconds=30, max_delivery_count=3, duplicate_window_seconds=600,
                    clock=clock) as q:
        yield q


def msg(message_id: str, scheduled_at: datetime | None = None) -> OutgoingMessage:
    return OutgoingMessage({"id": message_id, "n": [1, 2]}, message_id, scheduled_at)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_receives_in_enqueue_order_with_decoded_body_and_a_lock(queue: LocalQueue):
    queue.send("work", [msg("a"), msg("b")])
    queue.send("work", [msg("c")])
    got = queue.receive("work", max_messages=10)
    assert [m.message_id for m in got] == ["a", "b", "c"]
    first = got[0]
    assert (first.queue, first.body, first.delivery_count) == ("work", {"id": "a", "n": [1, 2]}, 1)
    assert (first.enqueued_at, first.locked_until) == (T0, T0 + 30)
    assert len({m.lock_token for m in got}) == 3


def test_max_messages_limits_a_receive(queue: LocalQueue):
    queue.send("work", [msg("a"), msg("b"), msg("c")])
    assert [m.message_id for m in queue.receive("work", max_messages=2)] == ["a", "b"]
    assert [m.message_id for m in queue.receive("work", max_messages=2)] == ["c"]


def test_queues_are_separate(queue: LocalQueue):
    queue.send("one", [msg("a")])
    queue.send("two", [msg("a")])  # duplicate detection is per queue
    assert queue.receive("three") == []
    assert [m.queue for m in queue.receive("two")] == ["two"]
    assert not queue.idle(["one"])
    assert queue.idle(["three"])
    assert queue.idle([])


def test_locked_message_is_hidden_until_its_lock_expires(queue: LocalQueue, clock: FakeClock):
    queue.send("work", [msg("a")])
    first = queue.receive("work")[0]
    assert queue.receive("work") == []
    assert queue.counts("work") == {"active": 0, "scheduled": 0, "locked": 1, "dead_lettered": 0}
    assert queue.next_visible_at("work") == T0 + 30

    clock.advance(29.9)
    assert queue.receive("work") == []
    clock.advance(0.1)
    again = queue.receive("work")
    assert [(m.message_id, m.delivery_count) for m in again] == [("a", 2)]
    assert again[0].lock_token != first.lock_token
    assert again[0].locked_until == T0 + 60


def test_expired_lock_counts_as_active(queue: LocalQueue, clock: FakeClock):
    queue.send("work", [msg("a")])
    queue.receive("work")
    clock.advance(31)
    assert queue.counts("work") == {"active": 1, "scheduled": 0, "locked": 0, "dead_lettered": 0}


def test_complete_removes_the_message(queue: LocalQueue, clock: FakeClock):
    queue.send("work", [msg("a")])
    queue.complete(queue.receive("work")[0])
    clock.advance(3600)
    assert queue.receive("work") == []
    assert queue.counts("work") == {"active": 0, "scheduled": 0, "locked": 0, "dead_lettered": 0}
    assert queue.next_visible_at("work") is None
    assert queue.idle(["work"])


def test_abandon_makes_the_message_receivable_at_once(queue: LocalQueue, clock: FakeClock):
    queue.send("work", [msg("a"), msg("b")])
    first = queue.receive("work")[0]
    clock.advance(5)
    queue.abandon(first)
    assert queue.counts("work") == {"active": 2, "scheduled": 0, "locked": 0, "dead_lettered": 0}
    again = queue.receive("work", max_messages=2)
    assert [(m.message_id, m.delivery_count) for m in again] == [("a", 2), ("b", 1)]


def test_dead_letters_after_max_delivery_count(queue: LocalQueue, clock: FakeClock):
    queue.send("work", [msg("a"), msg("b")])
    for delivery in (1, 2, 3):
        received = queue.receive("work")
        assert [(m.message_id, m.delivery_count) for m in received] == [("a", delivery)]
        queue.abandon(received[0])

    assert [m.message_id for m in queue.receive("work")] == ["b"]  # "a" goes to the dead-letter queue instead
    assert queue.dead_letters("work") == [
        DeadLetter("a", {"id": "a", "n": [1, 2]}, MAX_DELIVERY_COUNT_EXCEEDED, "not settled after 3 deliveries", 3),
    ]
    assert queue.counts("work") == {"active": 0, "scheduled": 0, "locked": 1, "dead_lettered": 1}


def test_expired_locks_also_count_towards_dead_lettering(queue: LocalQueue, clock: FakeClock):
    queue.send("work", [msg("a")])
    for _ in range(3):
        assert queue.receive("work")
        clock.advance(30)
    assert queue.receive("work") == []
    assert [(d.reason, d.delivery_count) for d in queue.dead_letters("work")] == [(MAX_DELIVERY_COUNT_EXCEEDED, 3)]
    assert queue.idle(["work"])


def test_explicit_dead_letter_keeps_reason_and_description(queue: LocalQueue):
    queue.send("work", [msg("a")])
    queue.dead_letter(queue.receive("work")[0], "BadInput", "row 7 has no label")
    expected = DeadLetter("a", {"id": "a", "n": [1, 2]}, "BadInput", "row 7 has no label", 1)
    assert queue.dead_letters("work") == [expected]
    assert queue.dead_letters("other") == []
    assert queue.receive("work") == []
    assert queue.idle(["work"])


def test_settling_with_a_lock_that_expired_and_was_retaken_raises_lock_lost(queue: LocalQueue, clock: FakeClock):
    queue.send("work", [msg("a")])
    stale = queue.receive("work")[0]
    clock.advance(30)
    current = queue.receive("work")[0]

    for settle in (queue.complete, queue.abandon, queue.renew_lock, lambda m: queue.dead_letter(m, "X")):
        with pytest.raises(LockLost, match="work/a"):
            settle(stale)
    assert queue.counts("work")["locked"] == 1
    queue.complete(current)
    assert queue.idle(["work"])


def test_settling_with_an_expired_lock_raises_lock_lost_even_if_not_retaken(queue: LocalQueue, clock: FakeClock):
    queue.send("work", [msg("a")])
    stale = queue.receive("work")[0]
    clock.advance(30)
    with pytest.raises(LockLost):
        queue.complete(stale)
    assert queue.counts("work")["active"] == 1


def test_settling_twice_raises_lock_lost(queue: LocalQueue):
    queue.send("work", [msg("a")])
    received = queue.receive("work")[0]
    queue.complete(received)
    with pytest.raises(LockLost):
        queue.complete(received)
    with pytest.raises(LockLost):
        queue.abandon(received)


def test_renew_lock_extends_the_lock_from_now(queue: LocalQueue, clock: FakeClock):
    queue.send("work", [msg("a")])
    received = queue.receive("work")[0]
    clock.advance(20)
    renewed = queue.renew_lock(received)
    assert renewed.locked_until == T0 + 50
    assert renewed.lock_token == received.lock_token
    clock.advance(20)
    assert queue.receive("work") == []
    queue.complete(renewed)


def test_duplicate_ids_are_dropped_within_the_window_even_after_completion(queue: LocalQueue, clock: FakeClock):
    queue.send("work", [msg("a"), msg("a")])
    assert queue.counts("work")["active"] == 1
    queue.complete(queue.receive("work")[0])

    clock.advance(599)
    queue.send("work", [msg("a")])
    assert queue.receive("work") == []

    clock.advance(1)  # 600 s after the first enqueue: the window has passed
    queue.send("work", [msg("a")])
    assert [(m.message_id, m.delivery_count, m.enqueued_at) for m in queue.receive("work")] == [("a", 1, T0 + 600)]


def test_scheduled_message_is_invisible_until_due(queue: LocalQueue, clock: FakeClock):
    queue.send("work", [msg("later", at(T0 + 100)), msg("soon", at(T0 + 10))])
    assert queue.receive("work") == []
    assert queue.counts("work") == {"active": 0, "scheduled": 2, "locked": 0, "dead_lettered": 0}
    assert queue.next_visible_at("work") == T0 + 10
    assert not queue.idle(["work"])

    clock.advance(10)
    assert [m.message_id for m in queue.receive("work")] == ["soon"]
    assert queue.next_visible_at("work") == T0 + 40  # the lock on "soon" ends before "later" is due
    clock.advance(90)
    assert [m.message_id for m in queue.receive("work", max_messages=5)] == ["later", "soon"]


def test_scheduled_time_in_another_timezone_or_the_past(queue: LocalQueue):
    plus_two = timezone(timedelta(hours=2))
    queue.send("work", [msg("due", at(T0 - 5).astimezone(plus_two)), msg("later", at(T0 + 5).astimezone(plus_two))])
    assert [m.message_id for m in queue.receive("work", max_messages=5)] == ["due"]
    assert queue.next_visible_at("work") == T0 + 5


def test_naive_scheduled_time_is_refused_and_nothing_is_sent(queue: LocalQueue):
    with pytest.raises(ValueError, match="timezone-aware"):
        queue.send("work", [msg("a"), msg("b", datetime(2030, 1, 1))])
    assert queue.idle(["work"])


def test_send_is_all_or_nothing(queue: LocalQueue):
    with pytest.raises(TypeError):
        queue.send("work", [msg("a"), OutgoingMessage({"x": object()}, "b")])
    queue.send("work", [msg("a")])  # "a" was not recorded as seen
    assert queue.counts("work")["active"] == 1


def test_messages_survive_reopening_the_file(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "queue.db"
    with LocalQueue(path, clock=clock) as q:
        q.send("work", [msg("a"), msg("b")])
        q.complete(q.receive("work")[0])
    with LocalQueue(path, clock=clock) as q:
        received = q.receive("work")
        assert [(m.message_id, m.body, m.delivery_count) for m in received] == [("b", {"id": "b", "n": [1, 2]}, 1)]
        q.send("work", [msg("a")])  # the duplicate-detection history survives too
        assert q.counts("work") == {"active": 0, "scheduled": 0, "locked": 1, "dead_lettered": 0}


_CHILD = """
import sys, time
from pathlib import Path
from shared.queueing.local import LocalQueue
queue = LocalQueue(Path(sys.argv[1]), lock_seconds=0.3)
[message] = queue.receive("work")
print(message.message_id, message.locked_until, flush=True)
time.sleep(60)
"""


def test_messages_locked_by_a_killed_process_come_back_after_the_lock_expires(tmp_path: Path):
    path = tmp_path / "queue.db"
    with LocalQueue(path) as q:
        q.send("work", [msg("a")])
    command = [sys.executable, "-c", _CHILD, str(path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as child:
        try:
            message_id, locked_until = child.stdout.readline().split()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert message_id == "a"

    with LocalQueue(path, clock=lambda: float(locked_until) - 0.01) as q:
        assert q.receive("work") == []  # still locked by the dead process
    time.sleep(max(0.0, float(locked_until) - time.time()) + 0.01)
    with LocalQueue(path) as q:
        assert [(m.message_id, m.delivery_count) for m in q.receive("work")] == [("a", 2)]


@pytest.mark.parametrize("shared_instance", [True, False], ids=["one-instance", "instance-per-thread"])
def test_concurrent_receivers_each_get_every_message_exactly_once(tmp_path: Path, shared_instance: bool):
    path = tmp_path / "queue.db"
    main = LocalQueue(path)
    main.send("work", [msg(f"m{i:03}") for i in range(200)])
    start = threading.Barrier(4)
    got: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def drain(index: int) -> None:
        q = main if shared_instance else LocalQueue(path)
        start.wait()
        try:
            while received := q.receive("work", max_messages=1 + index):
                for m in received:
                    got[index].append(m.message_id)
                    q.complete(m)
        except Exception as exc:
            errors.append(exc)
        if q is not main:
            q.close()

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    all_ids = [mid for ids in got for mid in ids]
    assert sorted(all_ids) == [f"m{i:03}" for i in range(200)]
    assert main.idle(["work"])
    main.close()


def test_release_locks_frees_the_messages_of_a_killed_run(queue: LocalQueue):
    queue.send("work", [msg("a"), msg("later", at(T0 + 100))])
    stale = queue.receive("work")[0]
    assert queue.release_locks() == 1  # the scheduled message is not locked, so it stays scheduled
    assert queue.counts("work") == {"active": 1, "scheduled": 1, "locked": 0, "dead_lettered": 0}
    assert [(m.message_id, m.delivery_count) for m in queue.receive("work")] == [("a", 2)]
    with pytest.raises(LockLost):
        queue.complete(stale)


def test_a_message_id_or_a_message_service_bus_would_refuse_is_refused_here_too(queue: LocalQueue):
    with pytest.raises(ValueError, match="129 characters; a queue takes at most 128"):
        queue.send("q", [msg("x" * 129)])
    with pytest.raises(ValueError, match="a queue takes at most 262,144"):
        queue.send("q", [OutgoingMessage({"text": "x" * 262_144}, "big")])
    queue.send("q", [msg("x" * 128)])
    assert queue.counts("q")["active"] == 1
