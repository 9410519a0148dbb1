"""``GET /metrics``: the agent's counters in the Prometheus text format (version 0.0.4).

Declared as a table of metrics, each with a value function over one :class:`MetricsView`;
written by hand (the format is a few lines) so the device needs no client library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent.outbox import OutboxStats
from agent.telemetry import Totals


@dataclass(frozen=True)
class MetricsView:
    totals: Totals
    model: str | None
    rss_mb: float | None
    #: The store-and-forward queue (None: unreadable right now, its metrics are left out).
    outbox: OutboxStats | None = None
    #: Messages the outbox drain delivered (broker-acknowledged) since the agent started.
    drained: int = 0
    #: Bundle download counters since start (``agent.download_counters.KINDS``).
    downloads: Mapping[str, int] = field(default_factory=dict)


def _outbox(value: Callable[[OutboxStats], float]) -> Callable[[MetricsView], list[Sample]]:
    return lambda v: [({}, value(v.outbox))] if v.outbox is not None else []


def _dropped(v: MetricsView) -> list[Sample]:
    if v.outbox is None:
        return []
    o = v.outbox
    counts = {"telemetry": o.dropped_telemetry, "event": o.dropped_events, "state": o.dropped_state}
    return [({"kind": kind}, n) for kind, n in counts.items()]


Sample = tuple[dict[str, str], float]


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter | gauge
    help: str
    samples: Callable[[MetricsView], list[Sample]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


METRICS: tuple[Metric, ...] = (
    Metric(
        "edgefleet_agent_inferences_total",
        "counter",
        "Inputs run through the model.",
        lambda v: [({}, v.totals.inferences)],
    ),
    Metric(
        "edgefleet_agent_inference_seconds_total",
        "counter",
        "Time spent in the model, summed.",
        lambda v: [({}, v.totals.latency_ms_sum / 1000.0)],
    ),
    Metric(
        "edgefleet_agent_errors_total",
        "counter",
        "Inputs or requests that failed, by kind.",
        lambda v: [({"kind": k}, n) for k, n in sorted(v.totals.errors.items())],
    ),
    Metric(
        "edgefleet_agent_dropped_total",
        "counter",
        "Live inputs dropped because inference was behind.",
        lambda v: [({}, v.totals.dropped)],
    ),
    Metric(
        "edgefleet_agent_model_info",
        "gauge",
        "The serving model (1), by name@version.",
        lambda v: [({"model": v.model}, 1.0)] if v.model else [],
    ),
    Metric(
        "edgefleet_agent_resident_memory_megabytes",
        "gauge",
        "Resident set size of the agent process.",
        lambda v: [({}, v.rss_mb)] if v.rss_mb is not None else [],
    ),
    Metric(
        "edgefleet_agent_outbox_messages",
        "gauge",
        "Messages waiting in the store-and-forward queue for the broker.",
        _outbox(lambda o: o.messages),
    ),
    Metric(
        "edgefleet_agent_outbox_bytes",
        "gauge",
        "Bytes the waiting messages count against the outbox budget.",
        _outbox(lambda o: o.bytes),
    ),
    Metric(
        "edgefleet_agent_outbox_dropped_total",
        "counter",
        "Queued messages dropped to stay within the outbox budget, by kind (kept on disk "
        "across restarts).",
        _dropped,
    ),
    Metric(
        "edgefleet_agent_outbox_drained_total",
        "counter",
        "Queued messages delivered to the broker (acknowledged) since the agent started.",
        lambda v: [({}, v.drained)],
    ),
    Metric(
        "edgefleet_agent_outbox_corrupt_recoveries_total",
        "counter",
        "Times an unreadable outbox file was moved aside and a new one started.",
        _outbox(lambda o: o.corrupt_recoveries),
    ),
    Metric(
        "edgefleet_agent_download_bytes_total",
        "counter",
        "Bundle bytes received, by kind: all received, and refetched (at offsets already "
        "fetched once: a resume that had to start over).",
        lambda v: [
            ({"kind": "received"}, v.downloads.get("bytes", 0)),
            ({"kind": "refetched"}, v.downloads.get("refetched_bytes", 0)),
        ],
    ),
    Metric(
        "edgefleet_agent_download_retries_total",
        "counter",
        "Bundle download attempts after a transient failure (each resumes the part).",
        lambda v: [({}, v.downloads.get("retries", 0))],
    ),
)


def render(view: MetricsView) -> str:
    lines = []
    for metric in METRICS:
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for labels, value in metric.samples(view):
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(
                f"{metric.name}{{{text}}} {value:g}" if text else f"{metric.name} {value:g}"
            )
    return "\n".join(lines) + "\n"
