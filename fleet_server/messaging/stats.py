"""Ingest counters, readable as JSON and as Prometheus metrics from a per-app registry."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

#: Why a message was dropped; the label values of ``edgefleet_ingest_rejected_total``.
#: ``non_finite``: NaN or ±Infinity in a number; ``out_of_range``: a counter past BIGINT;
#: ``nul_in_text``: a NUL character in a text column (these three refused before the database
#: sees them); ``db_refused``: a message the database itself refused (isolated from its batch,
#: which is stored); ``ts_future``/``ts_past``: a device timestamp outside the window of the
#: server's clock (:mod:`.sanity`). An unreachable database drops nothing: see ``stalled`` and
#: ``db_retries``.
REJECT_REASONS = (
    "bad_topic",
    "oversized",
    "bad_json",
    "schema",
    "device_mismatch",
    "unknown_device",
    "overloaded",
    "non_finite",
    "out_of_range",
    "nul_in_text",
    "db_refused",
    "ts_future",
    "ts_past",
)


class IngestStats:
    """Thread-safe counters of what ingest received, stored, skipped and refused.

    With ingest worker processes each worker keeps its own and sends :meth:`export` to the
    server process every fraction of a second; :meth:`merge` keeps the latest per worker, and
    every reading (attributes, :meth:`snapshot`, :meth:`totals`) is this process's counts plus
    every worker's, so ``/metrics`` shows the whole server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received = 0
        self._stored = 0
        self._duplicates = 0
        self._rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self._batches = 0
        self._db_retries = 0
        self._seq_resets = 0
        self.queue_depth = 0
        #: True while a batch waits for the database to come back (its acks held).
        self.stalled = False
        self._remote: dict[str, dict[str, Any]] = {}

    def add(
        self, *, received: int = 0, stored: int = 0, duplicates: int = 0, seq_resets: int = 0
    ) -> None:
        with self._lock:
            self._received += received
            self._stored += stored
            self._duplicates += duplicates
            self._seq_resets += seq_resets

    def reject(self, reason: str, count: int = 1) -> None:
        if reason not in self._rejected:
            raise ValueError(f"unknown reject reason {reason!r}")
        with self._lock:
            self._rejected[reason] += count

    def batch_done(self) -> None:
        with self._lock:
            self._batches += 1

    def db_retry(self) -> None:
        """One failed attempt to reach the database; the batch is kept and tried again."""
        with self._lock:
            self._db_retries += 1

    # -- across processes ----------------------------------------------------------------------
    def export(self) -> dict[str, Any]:
        """This process's own counts (what a worker sends to the server process)."""
        with self._lock:
            return {
                "received": self._received,
                "stored": self._stored,
                "duplicates": self._duplicates,
                "rejected": dict(self._rejected),
                "batches": self._batches,
                "seq_resets": self._seq_resets,
                "queue_depth": self.queue_depth,
                "db_retries": self._db_retries,
                "stalled": self.stalled,
            }

    def merge(self, source: str, exported: dict[str, Any]) -> None:
        """Take ``source``'s latest :meth:`export` (counts only grow, so the newest wins)."""
        with self._lock:
            self._remote[source] = exported

    def sources(self) -> dict[str, dict[str, Any]]:
        """Each worker's latest counts, by worker name."""
        with self._lock:
            return {name: dict(counts) for name, counts in self._remote.items()}

    def _sum(self, key: str, local: int) -> int:
        return local + sum(int(r.get(key, 0)) for r in self._remote.values())

    @property
    def received(self) -> int:
        with self._lock:
            return self._sum("received", self._received)

    @property
    def stored(self) -> int:
        with self._lock:
            return self._sum("stored", self._stored)

    @property
    def duplicates(self) -> int:
        with self._lock:
            return self._sum("duplicates", self._duplicates)

    @property
    def seq_resets(self) -> int:
        with self._lock:
            return self._sum("seq_resets", self._seq_resets)

    @property
    def batches(self) -> int:
        return self.totals()[2]

    @property
    def db_retries(self) -> int:
        with self._lock:
            return self._db_retries + sum(
                int(r.get("db_retries", 0)) for r in self._remote.values()
            )

    @property
    def any_stalled(self) -> bool:
        """This process's writer or any worker waits for the database."""
        with self._lock:
            return self.stalled or any(bool(r.get("stalled")) for r in self._remote.values())

    @property
    def rejected(self) -> dict[str, int]:
        return self.totals()[0]

    # -- readings --------------------------------------------------------------------------------
    def totals(self) -> tuple[dict[str, int], int, int]:
        """Every reject reason (zeros included), the queue depth and the batch count."""
        with self._lock:
            rejected = dict(self._rejected)
            for remote in self._remote.values():
                for reason, count in remote["rejected"].items():
                    rejected[reason] = rejected.get(reason, 0) + int(count)
            depth = self._sum("queue_depth", self.queue_depth)
            return rejected, depth, self._sum("batches", self._batches)

    def snapshot(self) -> dict[str, Any]:
        """The JSON of ``/api/v1/ingest/stats``; like the reject reasons, ``seq_resets`` only
        once there was one."""
        rejected = self.totals()[0]
        with self._lock:
            snap: dict[str, Any] = {
                "received": self._sum("received", self._received),
                "stored": self._sum("stored", self._stored),
                "duplicates": self._sum("duplicates", self._duplicates),
                "rejected": {k: v for k, v in rejected.items() if v},
            }
            resets = self._sum("seq_resets", self._seq_resets)
        if resets:
            snap["seq_resets"] = resets
        return snap


class IngestCollector(Collector):
    """Exposes :class:`IngestStats` at scrape time (one source of truth, no double counting)."""

    def __init__(self, stats: IngestStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        snap = self._stats.snapshot()
        for name, help_text in (
            ("received", "Device messages received over MQTT."),
            ("stored", "Device messages written to the database."),
            ("duplicates", "Redelivered or stale messages skipped."),
            ("seq_resets", "State/telemetry seqs far below a device's last: a restarted counter."),
        ):
            value = snap.get(name, 0)
            yield CounterMetricFamily(f"edgefleet_ingest_{name}", help_text, value=value)
        rejected = CounterMetricFamily(
            "edgefleet_ingest_rejected", "Device messages dropped, by reason.", labels=["reason"]
        )
        counts, depth, batches = self._stats.totals()
        for reason, count in counts.items():
            rejected.add_metric([reason], count)
        yield rejected
        yield CounterMetricFamily(
            "edgefleet_ingest_batches", "Database batches written by ingest.", value=batches
        )
        yield GaugeMetricFamily(
            "edgefleet_ingest_queue_depth", "Messages waiting for the ingest writer.", value=depth
        )
        yield CounterMetricFamily(
            "edgefleet_ingest_db_retries",
            "Failed attempts to reach the database; the batch was kept and tried again.",
            value=self._stats.db_retries,
        )
        yield GaugeMetricFamily(
            "edgefleet_ingest_stalled",
            "1 while ingest waits for the database (acknowledgements held, nothing dropped).",
            value=int(self._stats.any_stalled),
        )


def make_registry(stats: IngestStats) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(IngestCollector(stats))
    return registry
