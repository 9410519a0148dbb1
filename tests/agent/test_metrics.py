"""``GET /metrics`` text: the outbox counters, checked with Prometheus' own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import MetricsView, render
from agent.outbox import OutboxStats
from agent.telemetry import Totals


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_outbox_counters_are_exported() -> None:
    stats = OutboxStats(
        messages=42,
        bytes=9_000,
        dropped_telemetry=5,
        dropped_events=1,
        dropped_state=0,
        corrupt_recoveries=2,
    )
    view = MetricsView(totals=Totals(), model=None, rss_mb=None, outbox=stats, drained=17)
    samples = _samples(render(view))
    assert samples[("edgefleet_agent_outbox_messages", ())] == 42
    assert samples[("edgefleet_agent_outbox_bytes", ())] == 9_000
    assert samples[("edgefleet_agent_outbox_drained_total", ())] == 17
    assert samples[("edgefleet_agent_outbox_corrupt_recoveries_total", ())] == 2
    dropped = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "edgefleet_agent_outbox_dropped_total"
    }
    assert dropped == {
        (("kind", "telemetry"),): 5,
        (("kind", "event"),): 1,
        (("kind", "state"),): 0,
    }


def test_an_unreadable_outbox_leaves_its_gauges_out() -> None:
    text = render(MetricsView(totals=Totals(), model=None, rss_mb=None, outbox=None, drained=3))
    names = {name for name, _labels in _samples(text)}
    assert "edgefleet_agent_outbox_messages" not in names
    assert "edgefleet_agent_outbox_dropped_total" not in names
    assert ("edgefleet_agent_outbox_drained_total") in names
