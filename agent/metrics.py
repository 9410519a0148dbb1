"""``GET /metrics``: the agent's counters in the Prometheus text format (version 0.0.4).

Declared as a table of metrics, each with a value function over one :class:`MetricsView`;
written by hand (the format is a few lines) so the device needs no client library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.telemetry import Totals


@dataclass(frozen=True)
class MetricsView:
    totals: Totals
    model: str | None
    rss_mb: float | None


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter | gauge
    help: str
    samples: Callable[[MetricsView], list[tuple[dict[str, str], float]]]


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
