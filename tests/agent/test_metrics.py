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


def test_download_counters_are_exported() -> None:
    from agent.download_counters import DownloadCounters

    counters = DownloadCounters()
    counters.add("bytes", 1_000_000)
    counters.add("refetched_bytes", 250_000)
    counters.add("retries", 3)
    assert counters.flush() == {
        "download.bytes": 1_000_000.0,
        "download.refetched_bytes": 250_000.0,
        "download.retries": 3.0,
    }
    assert counters.flush() == {}  # per interval; the totals stay
    view = MetricsView(totals=Totals(), model=None, rss_mb=None, downloads=counters.totals())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(render(view))
        for s in family.samples
    }
    assert samples[("edgefleet_agent_download_bytes_total", (("kind", "received"),))] == 1e6
    assert samples[("edgefleet_agent_download_bytes_total", (("kind", "refetched"),))] == 250e3
    assert samples[("edgefleet_agent_download_retries_total", ())] == 3
