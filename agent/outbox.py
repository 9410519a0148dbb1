"""The on-device store-and-forward queue for outgoing MQTT messages (SQLite, standard library).

Messages wait here while the broker is unreachable and leave in the order they were put. A
message is deleted only after the caller's ``send`` confirmed it (at-least-once: a crash
between the broker's acknowledgement and the delete sends it again; the server ingests
idempotently by device + seq).

The queue holds at most ``max_bytes`` (payload + topic + a fixed per-row overhead). When a
``put`` would exceed it, the oldest **telemetry** goes first; events are kept over telemetry
and dropped (oldest first) only when no telemetry is left, then state. Each drop is counted
in a persisted counter. A newer ``state`` for a topic replaces an unsent older one (state is
retained and only the latest matters; not counted as a drop).

Durability: WAL with ``synchronous=FULL``. A commit is on disk before ``put`` returns, so a
message survives a power cut, not only a killed process (NORMAL survives kill -9 but may lose
the last commits on power loss; an edge device is unplugged far more often than a server). The
price is one fsync per ``put``/``ack`` batch, negligible at telemetry rates (one summary every
few seconds). A database file SQLite cannot read is moved aside (``<name>.corrupt-<time>``, the
last three kept), logged and counted, and an empty queue is created instead of failing.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, get_args

from agent.errors import AgentError

log = logging.getLogger(__name__)
_T = TypeVar("_T")

Kind = Literal["telemetry", "event", "state"]
KINDS: tuple[str, ...] = get_args(Kind)
#: Dropped when over budget in this order (oldest first within a kind).
DROP_ORDER: tuple[Kind, ...] = ("telemetry", "event", "state")
#: Bytes counted per row on top of payload and topic (row header, index entries).
ROW_OVERHEAD = 64
MAX_TOPIC_BYTES = 65_535
KEEP_CORRUPT_COPIES = 3
#: SQLite's page cache for the outbox, KiB. The default (2 MiB per connection) fills the first
#: time a broker outage queues rows and stays: a 1.9 MB RSS step on the device (the short soak,
#: tests/hil/test_soak.py). A queue reads and writes its tail; 256 KiB holds it.
PAGE_CACHE_KIB = 256
_SCHEMA_VERSION = 1
_COUNTERS = ("dropped_telemetry", "dropped_events", "dropped_state", "corrupt_recoveries")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('telemetry', 'event', 'state')),
    retain INTEGER NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS message_kind ON message (kind, id);
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class OutboxError(AgentError):
    """The outbox cannot store or read a message (one line)."""


class PayloadTooLarge(OutboxError):
    """A single message is larger than the whole byte budget."""


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    kind: Kind
    retain: bool


@dataclass(frozen=True)
class OutboxStats:
    messages: int
    bytes: int
    dropped_telemetry: int
    dropped_events: int
    dropped_state: int
    corrupt_recoveries: int


def message_size(topic: str, payload: bytes) -> int:
    """What one message counts against the budget."""
    return len(payload) + len(topic.encode()) + ROW_OVERHEAD


class Outbox:
    """A persistent FIFO of outgoing messages under a byte budget; safe to share between
    threads (one connection behind a lock). One process per file."""

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise OutboxError(f"outbox max_bytes must be a positive integer, got {max_bytes!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutboxError(
                f"cannot create the outbox directory {self.path.parent}: {err}"
            ) from err
        self._conn = self._open_or_recover()
        self._bytes = self._scalar("SELECT COALESCE(SUM(size), 0) FROM message")

    # -- public API ---------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes, *, kind: Kind, retain: bool = False) -> int:
        """Store a message (durably) and return its id; drops older ones to stay in budget.

        Raises :class:`PayloadTooLarge` for a message larger than the budget and
        :class:`OutboxError` for an invalid topic, kind or payload type.
        """
        size = _checked(topic, payload, kind)
        if size > self.max_bytes:
            raise PayloadTooLarge(
                f"outbox message of {size} bytes exceeds the whole budget of {self.max_bytes}"
            )
        with self._lock:
            return self._guarded(lambda: self._put(topic, bytes(payload), kind, retain, size))

    def peek(self, limit: int = 100) -> list[OutboxMessage]:
        """The oldest ``limit`` messages, in order, without removing them."""
        if limit <= 0:
            return []
        with self._lock:
            rows = self._guarded(
                lambda: self._conn.execute(
                    "SELECT id, topic, payload, kind, retain FROM message ORDER BY id LIMIT ?",
                    (limit,),
                ).fetchall()
            )
        return [OutboxMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in rows]

    def ack(self, ids: Iterable[int]) -> int:
        """Delete the messages ``ids`` (sent and confirmed); returns how many were there."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        with self._lock:
            return self._guarded(lambda: self._ack(wanted))

    def drain(
        self,
        send: Callable[[OutboxMessage], bool],
        *,
        rate_per_s: float | None = None,
        stop: threading.Event | None = None,
        batch: int = 100,
    ) -> int:
        """Send everything queued, oldest first, and return how many were confirmed.

        ``send`` must return True only once the broker has the message (QoS 1 acknowledged);
        False (or an exception) stops the drain so order is kept, and the message stays queued.
        ``rate_per_s`` spaces the sends; ``stop`` ends the drain between two messages.
        """
        if rate_per_s is not None and not rate_per_s > 0:
            raise OutboxError(f"outbox rate_per_s must be positive, got {rate_per_s!r}")
        interval = 1.0 / rate_per_s if rate_per_s else 0.0
        stop = stop or threading.Event()
        sent = 0
        while not stop.is_set():
            messages = self.peek(batch)
            if not messages:
                break
            confirmed: list[int] = []
            try:
                for message in messages:
                    if sent and interval and stop.wait(interval):
                        break
                    if stop.is_set() or not send(message):
                        break
                    confirmed.append(message.id)
                    sent += 1
            finally:
                self.ack(confirmed)  # an exception from send propagates after this
            if len(confirmed) < len(messages):
                break
        return sent

    def stats(self) -> OutboxStats:
        with self._lock:
            counters = self._guarded(self._counters)
            count = self._scalar("SELECT COUNT(*) FROM message")
            return OutboxStats(messages=count, bytes=self._bytes, **counters)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (called with the lock held) ------------------------------------------------
    def _put(self, topic: str, payload: bytes, kind: Kind, retain: bool, size: int) -> int:
        with self._conn:  # one transaction: insert, coalesce, trim
            freed = 0
            if kind == "state":
                freed = self._delete_where("kind = 'state' AND topic = ?", (topic,))
            cursor = self._conn.execute(
                "INSERT INTO message (topic, payload, kind, retain, size, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (topic, payload, kind, int(retain), size, time.time()),
            )
            new_id = int(cursor.lastrowid or 0)
            total = self._bytes - freed + size
            for drop_kind in DROP_ORDER:
                if total <= self.max_bytes:
                    break
                total -= self._trim(drop_kind, total - self.max_bytes)
        self._bytes = total
        return new_id

    def _trim(self, kind: Kind, excess: int) -> int:
        """Delete the oldest ``kind`` rows until ``excess`` bytes are freed; returns bytes."""
        freed, ids = 0, []
        for row_id, size in self._conn.execute(
            "SELECT id, size FROM message WHERE kind = ? ORDER BY id", (kind,)
        ):
            if freed >= excess:
                break
            ids.append(row_id)
            freed += size
        if ids:
            self._conn.executemany("DELETE FROM message WHERE id = ?", [(i,) for i in ids])
            name = {"telemetry": "dropped_telemetry", "event": "dropped_events"}.get(
                kind, "dropped_state"
            )
            self._bump(name, len(ids))
            log.warning("outbox over budget: dropped %d %s message(s)", len(ids), kind)
        return freed

    def _delete_where(self, where: str, args: tuple[object, ...]) -> int:
        freed = self._conn.execute(
            f"SELECT COALESCE(SUM(size), 0) FROM message WHERE {where}",  # noqa: S608 - constant
            args,
        ).fetchone()[0]
        self._conn.execute(f"DELETE FROM message WHERE {where}", args)  # noqa: S608 - constant
        return int(freed)

    def _ack(self, ids: list[int]) -> int:
        deleted, freed = 0, 0
        with self._conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                where = f"id IN ({marks})"
                freed += self._delete_where(where, tuple(chunk))
                deleted += self._conn.execute("SELECT changes()").fetchone()[0]
        self._bytes -= freed
        return int(deleted)

    def _bump(self, name: str, by: int) -> None:
        self._conn.execute(
            "INSERT INTO counter (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def _counters(self) -> dict[str, int]:
        values = dict.fromkeys(_COUNTERS, 0)
        for name, value in self._conn.execute("SELECT name, value FROM counter"):
            if name in values:
                values[name] = int(value)
        return values

    def _scalar(self, sql: str) -> int:
        return int(self._guarded(lambda: self._conn.execute(sql).fetchone()[0]))

    def _guarded(self, step: Callable[[], _T]) -> _T:
        """Run ``step``; a corrupt file is moved aside and ``step`` retried once on a new one."""
        try:
            return step()
        except sqlite3.DatabaseError as err:
            if not _is_corruption(err):
                raise OutboxError(f"outbox {self.path.name}: {err}") from err
            log.error("outbox database is corrupt (%s); starting an empty one", err)
            self._conn.close()
            self._conn = self._recreate(err)
            self._bytes = 0
            try:
                return step()
            except sqlite3.DatabaseError as again:
                raise OutboxError(f"outbox {self.path.name}: {again}") from again

    def _open_or_recover(self) -> sqlite3.Connection:
        try:
            return _open(self.path)
        except sqlite3.DatabaseError as err:
            if not _is_corruption(err):
                raise OutboxError(f"cannot open outbox {self.path}: {err}") from err
            log.error("outbox database %s is corrupt (%s); starting an empty one", self.path, err)
            return self._recreate(err)

    def _recreate(self, err: Exception) -> sqlite3.Connection:
        # os.urandom, not secrets: secrets imports hmac, hmac OpenSSL (edgefleet.digest)
        stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(2).hex()}"
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm", "-journal"):
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                source.replace(aside.with_name(aside.name + suffix))
        copies = sorted(self.path.parent.glob(f"{self.path.name}.corrupt-*"))
        for old in copies[: max(0, len(copies) - KEEP_CORRUPT_COPIES * 4)]:
            old.unlink(missing_ok=True)
        log.error("moved the corrupt outbox aside to %s", aside, extra={"error": str(err)})
        try:
            conn = _open(self.path)
        except sqlite3.DatabaseError as again:
            raise OutboxError(f"cannot recreate outbox {self.path}: {again}") from again
        with conn:
            conn.execute("INSERT INTO counter (name, value) VALUES ('corrupt_recoveries', 1)")
        return conn


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    try:
        conn.isolation_level = "DEFERRED"
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"file is not a database: schema version {version}")
        if version == 0:
            conn.executescript(_SCHEMA + f"PRAGMA user_version = {_SCHEMA_VERSION};")
        return conn
    except BaseException:
        conn.close()
        raise


def _is_corruption(err: sqlite3.DatabaseError) -> bool:
    if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
        return False
    text = str(err).lower()
    return any(s in text for s in ("malformed", "not a database", "corrupt", "no such table"))


def _checked(topic: str, payload: bytes, kind: str) -> int:
    if kind not in KINDS:
        raise OutboxError(f"outbox kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not isinstance(topic, str) or not topic:
        raise OutboxError("outbox topic must be a non-empty string")
    if any(c in topic for c in "#+\x00"):
        raise OutboxError(f"outbox topic {topic[:80]!r} has a wildcard or NUL")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise OutboxError(f"outbox payload must be bytes, got {type(payload).__name__}")
    try:
        encoded = len(topic.encode())
    except UnicodeEncodeError as err:
        raise OutboxError("outbox topic is not valid UTF-8") from err
    if encoded > MAX_TOPIC_BYTES:
        raise OutboxError(f"outbox topic of {encoded} bytes exceeds {MAX_TOPIC_BYTES}")
    return message_size(topic, bytes(payload))
