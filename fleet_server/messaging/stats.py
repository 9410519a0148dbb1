"""Ingest counters, readable as JSON and as Prometheus metrics from a per-app registry."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

#: Why a message was dropped; the label values of ``edgefleet_ingest_rejected_total``.
REJECT_REASONS = (
    "bad_topic",
    "oversized",
    "bad_json",
    "schema",
    "device_mismatch",
    "unknown_device",
    "overloaded",
    "db_error",
)


class IngestStats:
    """Thread-safe counters of what ingest received, stored, skipped and refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.stored = 0
        self.duplicates = 0
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.queue_depth = 0
        self.batches = 0

    def add(self, *, received: int = 0, stored: int = 0, duplicates: int = 0) -> None:
        with self._lock:
            self.received += received
            self.stored += stored
            self.duplicates += duplicates

    def reject(self, reason: str, count: int = 1) -> None:
        if reason not in self.rejected:
            raise ValueError(f"unknown reject reason {reason!r}")
        with self._lock:
            self.rejected[reason] += count

    def batch_done(self) -> None:
        with self._lock:
            self.batches += 1

    def totals(self) -> tuple[dict[str, int], int, int]:
        """Every reject reason (zeros included), the queue depth and the batch count."""
        with self._lock:
            return dict(self.rejected), self.queue_depth, self.batches

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "received": self.received,
                "stored": self.stored,
                "duplicates": self.duplicates,
                "rejected": {k: v for k, v in self.rejected.items() if v},
            }


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
        ):
            yield CounterMetricFamily(f"edgefleet_ingest_{name}", help_text, value=snap[name])
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


def make_registry(stats: IngestStats) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(IngestCollector(stats))
    return registry
