"""An embedded, durable queue with Service Bus semantics on SQLite: the local mode's `QueueSender` and its receiver.

Peek-lock delivery, lock expiry, abandon, dead-lettering after `max_delivery_count` deliveries, duplicate detection by
message id and scheduled delivery behave as in Service Bus. All queues live in one database file in WAL mode; every
change is one `BEGIN IMMEDIATE` transaction, so threads and processes can share the file, and a process killed
mid-work loses nothing: the messages it had locked become receivable again when their locks expire.

Two differences from Service Bus, both on the safe side: `send` is atomic (all messages of a call or none), and a lock
that has expired cannot be used to settle even when no one else has received the message since.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from shared.ports import MESSAGE_BYTES, MESSAGE_ID_CHARS, OutgoingMessage
from shared.queueing import encode_body, scheduled_utc

MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
BUSY_TIMEOUT_SECONDS = 30.0

# `visible_at` is when a message may next be received: its scheduled time, its lock expiry, or the moment it was
# abandoned. A message holds a lock while `lock_token` is set and `locked_until` is in the future.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT UNIQUE,
    locked_until REAL,
    properties TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    reason TEXT NOT NULL,
    description TEXT NOT NULL,
    delivery_count INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    dead_lettered_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_queue ON dead_letters (queue, seq);
CREATE TABLE IF NOT EXISTS seen_ids (
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (queue, message_id)
);
CREATE INDEX IF NOT EXISTS seen_ids_by_age ON seen_ids (first_seen);
"""


class LockLost(Exception):
    """The message's lock no longer holds: it expired (and the message may have gone to another receiver) or the
    message was already settled."""


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message delivered under a peek-lock; settle it with `complete`, `abandon` or `dead_letter`."""

    queue: str
    message_id: str
    body: dict[str, Any]
    delivery_count: int
    lock_token: str
    enqueued_at: float
    locked_until: float
    properties: dict[str, str] = field(default_factory=dict)  # application properties (traceparent)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message moved to a queue's dead-letter queue, with why."""

    message_id: str
    body: dict[str, Any]
    reason: str
    description: str
    delivery_count: int


class LocalQueue:
    """Durable queues in one SQLite file, safe to share between threads and processes.

    Times are seconds from `clock` (default `time.time`); every process sharing a file must use the same clock.
    """

    def __init__(self, path: Path, *, lock_seconds: float = 60.0, max_delivery_count: int = 10,
                 duplicate_window_seconds: float = 86400.0, clock: Callable[[], float] = time.time) -> None:
        if lock_seconds <= 0 or max_delivery_count < 1 or duplicate_window_seconds < 0:
            raise ValueError("lock_seconds must be > 0, max_delivery_count >= 1, duplicate_window_seconds >= 0")
        self._lock_seconds = lock_seconds
        self._max_delivery_count = max_delivery_count
        self._duplicate_window = duplicate_window_seconds
        self._clock = clock
        self._mutex = threading.Lock()  # one connection, used by one thread at a time
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        _add_properties_column(self._db)

    # -- sending

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        """Enqueue messages, all or none; an id already seen in this queue within the duplicate window is dropped."""
        rows = [(m.message_id, encode_body(m.body), scheduled_utc(m), json.dumps(dict(m.properties)))
                for m in messages]
        for message_id, body, _, properties in rows:  # refused here as Service Bus would refuse them
            if len(message_id) > MESSAGE_ID_CHARS:
                raise ValueError(f"message id {message_id[:40]!r}... is {len(message_id)} characters; a queue takes "
                                 f"at most {MESSAGE_ID_CHARS}")
            if (size := len(body.encode()) + len(properties.encode())) > MESSAGE_BYTES:
                raise ValueError(f"message {message_id!r} is {size:,} bytes; a queue takes at most {MESSAGE_BYTES:,}")
        with self._transaction() as (db, now):
            db.execute("DELETE FROM seen_ids WHERE first_seen <= ?", (now - self._duplicate_window,))
            for message_id, body, scheduled_at, properties in rows:
                first = db.execute("INSERT OR IGNORE INTO seen_ids VALUES (?, ?, ?)", (queue, message_id, now))
                if first.rowcount:
                    visible_at = scheduled_at.timestamp() if scheduled_at else now
                    db.execute(
                        "INSERT INTO messages (queue, message_id, body, enqueued_at, visible_at, properties)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (queue, message_id, body, now, visible_at, properties),
                    )

    # -- receiving and settling

    def receive(self, queue: str, max_messages: int = 1) -> list[ReceivedMessage]:
        """Lock and return up to `max_messages` receivable messages, oldest first.

        A message already delivered `max_delivery_count` times goes to the dead-letter queue instead.
        """
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        received: list[ReceivedMessage] = []
        with self._transaction() as (db, now):
            while len(received) < max_messages:
                rows = db.execute(
                    "SELECT seq, message_id, body, enqueued_at, delivery_count, properties FROM messages"
                    " WHERE queue = ? AND visible_at <= ? ORDER BY seq LIMIT ?",
                    (queue, now, max_messages - len(received)),
                ).fetchall()
                if not rows:
                    break
                received += [message for row in rows if (message := self._deliver(db, queue, row, now))]
        return received

    def release_locks(self) -> int:
        """Make every locked message receivable now; for a runtime that knows no other process holds locks
        (the locks of a killed run). Returns how many were released."""
        with self._transaction() as (db, now):
            return db.execute("UPDATE messages SET lock_token = NULL, locked_until = NULL, visible_at = ?"
                              " WHERE lock_token IS NOT NULL", (now,)).rowcount

    def complete(self, message: ReceivedMessage) -> None:
        """Remove a message for good."""
        with self._transaction() as (db, now):
            db.execute("DELETE FROM messages WHERE seq = ?", (_held(db, message, now),))

    def abandon(self, message: ReceivedMessage) -> None:
        """Release the lock: the message can be received again at once (its delivery count is kept)."""
        with self._transaction() as (db, now):
            db.execute(
                "UPDATE messages SET lock_token = NULL, locked_until = NULL, visible_at = ? WHERE seq = ?",
                (now, _held(db, message, now)),
            )

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str = "") -> None:
        """Move a message to its queue's dead-letter queue."""
        with self._transaction() as (db, now):
            _move_to_dead_letters(db, _held(db, message, now), reason, description, now)

    def renew_lock(self, message: ReceivedMessage) -> ReceivedMessage:
        """Extend the lock by `lock_seconds` from now; returns the message with its new `locked_until`."""
        with self._transaction() as (db, now):
            locked_until = now + self._lock_seconds
            db.execute(
                "UPDATE messages SET locked_until = ?, visible_at = ? WHERE seq = ?",
                (locked_until, locked_until, _held(db, message, now)),
            )
        return replace(message, locked_until=locked_until)

    # -- introspection

    def counts(self, queue: str) -> dict[str, int]:
        """How many messages are active (receivable now), scheduled, locked and dead-lettered."""
        row = self._read(
            "SELECT COALESCE(SUM(visible_at <= :now), 0),"
            " COALESCE(SUM(visible_at > :now AND lock_token IS NULL), 0),"
            " COALESCE(SUM(visible_at > :now AND lock_token IS NOT NULL), 0),"
            " (SELECT COUNT(*) FROM dead_letters WHERE queue = :queue)"
            " FROM messages WHERE queue = :queue",
            {"queue": queue, "now": self._clock()},
        )[0]
        return dict(zip(("active", "scheduled", "locked", "dead_lettered"), row, strict=True))

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        """The queue's dead-lettered messages, oldest first."""
        rows = self._read(
            "SELECT message_id, body, reason, description, delivery_count FROM dead_letters"
            " WHERE queue = ? ORDER BY seq",
            (queue,),
        )
        return [DeadLetter(mid, json.loads(body), reason, desc, count) for mid, body, reason, desc, count in rows]

    def next_visible_at(self, queue: str) -> float | None:
        """When the next message becomes receivable (in the past when one already is); None when the queue is empty."""
        return self._read("SELECT MIN(visible_at) FROM messages WHERE queue = ?", (queue,))[0][0]

    def idle(self, queues: Iterable[str]) -> bool:
        """True when none of these queues holds an active, scheduled or locked message."""
        names = list(queues)
        marks = ", ".join("?" * len(names))
        return not self._read(f"SELECT EXISTS (SELECT 1 FROM messages WHERE queue IN ({marks}))", names)[0][0]

    # -- lifecycle

    def close(self) -> None:
        """Close the database connection."""
        with self._mutex:
            self._db.close()

    def __enter__(self) -> LocalQueue:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- internals

    @contextmanager
    def _transaction(self) -> Iterator[tuple[sqlite3.Connection, float]]:
        """A write transaction and the time read once it holds the write lock."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db, self._clock()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[tuple[Any, ...]]:
        with self._mutex:
            return self._db.execute(sql, params).fetchall()

    def _deliver(self, db: sqlite3.Connection, queue: str, row: tuple[Any, ...], now: float) -> ReceivedMessage | None:
        """Lock one message for a new delivery, or dead-letter it when it has had all its deliveries."""
        seq, message_id, body, enqueued_at, delivery_count, properties = row
        if delivery_count >= self._max_delivery_count:
            description = f"not settled after {delivery_count} deliveries"
            _move_to_dead_letters(db, seq, MAX_DELIVERY_COUNT_EXCEEDED, description, now)
            return None
        token, locked_until = uuid.uuid4().hex, now + self._lock_seconds
        db.execute(
            "UPDATE messages SET delivery_count = delivery_count + 1, lock_token = ?, locked_until = ?, visible_at = ?"
            " WHERE seq = ?",
            (token, locked_until, locked_until, seq),
        )
        return ReceivedMessage(
            queue, message_id, json.loads(body), delivery_count + 1, token, enqueued_at, locked_until,
            json.loads(properties),
        )


def _held(db: sqlite3.Connection, message: ReceivedMessage, now: float) -> int:
    """The row of a message whose lock still holds; LockLost otherwise."""
    row = db.execute(
        "SELECT seq FROM messages WHERE queue = ? AND lock_token = ? AND locked_until > ?",
        (message.queue, message.lock_token, now),
    ).fetchone()
    if row is None:
        raise LockLost(f"{message.queue}/{message.message_id}: the lock expired or the message was already settled")
    return row[0]


def _move_to_dead_letters(db: sqlite3.Connection, seq: int, reason: str, description: str, now: float) -> None:
    db.execute(
        "INSERT INTO dead_letters"
        " (queue, message_id, body, reason, description, delivery_count, enqueued_at, dead_lettered_at)"
        " SELECT queue, message_id, body, ?, ?, delivery_count, enqueued_at, ? FROM messages WHERE seq = ?",
        (reason, description, now, seq),
    )
    db.execute("DELETE FROM messages WHERE seq = ?", (seq,))


def _add_properties_column(db: sqlite3.Connection) -> None:
    """Give a queue file written before messages had application properties their column."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    if "properties" not in columns:
        with suppress(sqlite3.OperationalError):  # another process added it first
            db.execute("ALTER TABLE messages ADD COLUMN properties TEXT NOT NULL DEFAULT '{}'")
