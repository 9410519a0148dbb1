"""The shadow stage's gates: per device class, what the rollout's devices reported about the
candidate running in shadow since the stage started (``shadow_reports``, summed by
:func:`fleet_server.services.shadow.summarise_devices`), against the strategy's ``shadow``
thresholds.

Per class and question: ``wait`` until the class has ``min_samples`` (paired inputs; for
the error rate, paired inputs plus failures), then ``pass`` or ``fail``. A class whose devices
have not reported yet waits too: the stage waits for every class it covers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fleet_server.models.shadow import ShadowGroup
from fleet_server.services.rollouts.gates import GateResult
from fleet_server.services.rollouts.spec import ShadowStage


def _agreement(group: ShadowGroup, spec: ShadowStage) -> GateResult:
    return _judge(
        "shadow_agreement",
        group.agreement,
        spec.min_agreement,
        group.paired,
        spec.min_samples,
        ok=lambda value, threshold: value >= threshold,
    )


def _latency(group: ShadowGroup, spec: ShadowStage) -> GateResult:
    return _judge(
        "shadow_latency_ratio",
        group.latency_ratio_p95,
        spec.max_latency_ratio,
        group.paired,
        spec.min_samples,
        ok=lambda value, threshold: value <= threshold,
    )


def _error_rate(group: ShadowGroup, spec: ShadowStage) -> GateResult:
    failures = sum(group.errors.values())
    tried = group.paired + failures
    rate = failures / tried if tried else None
    return _judge(
        "shadow_error_rate",
        rate,
        spec.max_error_rate,
        tried,
        spec.min_samples,
        ok=lambda value, threshold: value <= threshold,
    )


#: Every shadow gate, by name: one function per question.
SHADOW_GATES: dict[str, Callable[[ShadowGroup, ShadowStage], GateResult]] = {
    "shadow_agreement": _agreement,
    "shadow_latency_ratio": _latency,
    "shadow_error_rate": _error_rate,
}


def _judge(
    name: str,
    value: float | None,
    threshold: float,
    samples: int,
    min_samples: int,
    *,
    ok: Callable[[float, float], bool],
) -> GateResult:
    if samples < min_samples:
        return GateResult(name, "wait", value, threshold, samples, min_samples)
    if value is None:  # enough inputs but the figure is missing (e.g. no latencies reported)
        return GateResult(
            name, "wait", None, threshold, samples, min_samples, "figure not reported"
        )
    if ok(value, threshold):
        return GateResult(name, "pass", value, threshold, samples, min_samples)
    return GateResult(name, "fail", value, threshold, samples, min_samples)


def evaluate_shadow(
    spec: ShadowStage, groups: Mapping[str, ShadowGroup], classes: set[str]
) -> list[GateResult]:
    """Every shadow gate for every device class in ``classes`` (the classes of the devices
    running the shadow); a class missing from ``groups`` has reported nothing yet."""
    results = []
    for device_class in sorted(classes):
        group = groups.get(device_class) or ShadowGroup(
            devices=0,
            reports=0,
            paired=0,
            skipped=0,
            disagreements=0,
            agreement=None,
            serving_p95_ms=None,
            shadow_p95_ms=None,
            latency_ratio_p95=None,
            cpu_ratio=None,
            errors={},
        )
        for gate in SHADOW_GATES.values():
            result = gate(group, spec)
            results.append(
                GateResult(
                    result.name,
                    result.status,
                    result.value,
                    result.threshold,
                    result.samples,
                    result.min_samples,
                    f"class {device_class or '-'}"
                    + (f": {result.detail}" if result.detail else ""),
                    evidence="shadow",
                )
            )
    return results


def shadow_evidence(
    *, spec: ShadowStage, groups: Mapping[str, ShadowGroup], results: list[GateResult]
) -> dict[str, Any]:
    """What a shadow decision carries (and the report's ``shadow`` block shows)."""
    return {
        "spec": spec.model_dump(mode="json"),
        "device_classes": {k: g.model_dump(mode="json") for k, g in sorted(groups.items())},
        "gates": [r.as_dict() for r in results],
    }
