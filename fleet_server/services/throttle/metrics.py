"""The one shape both throttles show on ``/metrics``: checked failures and unchecked refusals
(counters), keys refused right now, and optionally the table sizes (gauges). Each throttle
names its families in a :class:`ThrottleMetrics` (the names are an operator contract)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class ThrottleSnapshot:
    """Counters and table sizes, taken under the throttle's lock (consistent with each other)."""

    failures: dict[str, int]  # checked and wrong, by label value
    refused: dict[str, int]  # refused unchecked, by label value
    clients: int  # keys with failures in the table (bounded)
    blocked: int  # keys refused right now
    known: int  # known-good holders remembered (bounded)


@dataclass(frozen=True)
class Family:
    name: str
    help: str


@dataclass(frozen=True)
class ThrottleMetrics:
    """Which families a throttle exports; ``label`` None sums the counters into one value."""

    failures: Family
    refused: Family
    blocked: Family
    label: str | None = None
    clients: Family | None = None
    known: Family | None = None
    labels: tuple[str, ...] = field(default=())  # label values always exported (even at 0)


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], ThrottleSnapshot], metrics: ThrottleMetrics) -> None:
        self._snapshot = snapshot
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        snap, m = self._snapshot(), self._metrics
        for family, counts in ((m.failures, snap.failures), (m.refused, snap.refused)):
            if m.label is None:
                yield CounterMetricFamily(family.name, family.help, value=sum(counts.values()))
                continue
            counter = CounterMetricFamily(family.name, family.help, labels=[m.label])
            for label in sorted(set(m.labels) | set(snap.failures) | set(snap.refused)):
                counter.add_metric([label], counts.get(label, 0))
            yield counter
        gauges = ((m.clients, snap.clients), (m.blocked, snap.blocked), (m.known, snap.known))
        for gauge, size in gauges:
            if gauge is not None:
                yield GaugeMetricFamily(gauge.name, gauge.help, value=size)
