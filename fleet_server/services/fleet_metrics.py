"""Fleet gauges for ``/metrics``, read from the database at scrape time (one source of truth,
right on every replica): devices online/offline, rollouts by state, devices per status in each
active rollout, and label accuracy per model version on the random and on all labelled
samples (classifiers; grouped in SQL by label and prediction, so a scrape reads at most
versions × reasons × classes² rows)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from fleet_server.models import Device, DriftStatus, ModelVersion, Rollout, RolloutDevice
from fleet_server.models.samples import Sample
from fleet_server.services.rollouts.state import ACTIVE_STATES, RolloutState

log = logging.getLogger(__name__)


class FleetCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Any]:
        devices = GaugeMetricFamily(
            "edgefleet_devices", "Registered devices by reported status.", labels=["status"]
        )
        rollouts = GaugeMetricFamily("edgefleet_rollouts", "Rollouts by state.", labels=["state"])
        members = GaugeMetricFamily(
            "edgefleet_rollout_devices",
            "Devices of each active rollout by status.",
            labels=["rollout", "model", "status"],
        )
        drift = GaugeMetricFamily(
            "edgefleet_drift",
            "1 while a drift detector judges a model version drifted, else 0.",
            labels=["model", "detector", "status"],
        )
        accuracy = GaugeMetricFamily(
            "edgefleet_label_accuracy",
            "Top-1 accuracy of a model version on labelled samples (subset: random | all).",
            labels=["model", "subset"],
        )
        labelled = GaugeMetricFamily(
            "edgefleet_labelled_samples",
            "Labelled samples of a model version (subset: random | all).",
            labels=["model", "subset"],
        )
        try:
            with Session(self._engine) as session:
                label_rows = session.execute(
                    sa_select(
                        col(Sample.model_name),
                        col(Sample.model_version),
                        col(Sample.reason),
                        col(Sample.label),
                        col(Sample.predicted),
                        func.count(),
                    )
                    .where(col(Sample.labelled).is_(True), col(Sample.label).is_not(None))
                    .group_by(
                        col(Sample.model_name),
                        col(Sample.model_version),
                        col(Sample.reason),
                        col(Sample.label),
                        col(Sample.predicted),
                    )
                ).all()
                versions = {(n, v) for n, v, *_ in label_rows}
                labels_of = {
                    (row.name, row.version): [str(x) for x in row.manifest.get("labels") or []]
                    for row in session.exec(
                        select(ModelVersion).where(
                            col(ModelVersion.name).in_({n for n, _ in versions})
                        )
                    )
                    if (row.name, row.version) in versions
                }
                verdicts = session.exec(
                    select(
                        DriftStatus.model_name,
                        DriftStatus.model_version,
                        DriftStatus.detector,
                        DriftStatus.status,
                    )
                ).all()
                online = {
                    bool(flag): int(n)
                    for flag, n in session.execute(
                        sa_select(col(Device.online), func.count())
                        .where(col(Device.decommissioned_at).is_(None))
                        .group_by(col(Device.online))
                    ).all()
                }
                by_state = dict(
                    session.exec(select(Rollout.state, func.count()).group_by(Rollout.state)).all()
                )
                active = session.execute(
                    sa_select(
                        col(Rollout.id),
                        col(Rollout.model_name),
                        col(Rollout.model_version),
                        col(RolloutDevice.status),
                        func.count(),
                    )
                    .join(RolloutDevice, col(RolloutDevice.rollout_id) == col(Rollout.id))
                    .where(col(Rollout.state).in_(ACTIVE_STATES))
                    .group_by(
                        col(Rollout.id),
                        col(Rollout.model_name),
                        col(Rollout.model_version),
                        col(RolloutDevice.status),
                    )
                ).all()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database did
            log.warning("fleet metrics unavailable: database error", exc_info=True)
            return
        devices.add_metric(["online"], online.get(True, 0))
        devices.add_metric(["offline"], online.get(False, 0))
        for state in RolloutState:
            rollouts.add_metric([state.value], by_state.get(state.value, 0))
        for rollout_id, name, version, status, count in active:
            members.add_metric([str(rollout_id), f"{name}@{version}", status], count)
        for name, version, detector, status in verdicts:
            drift.add_metric([f"{name}@{version}", detector, status], 1 if status == "drift" else 0)
        sums: dict[tuple[str, str], list[int]] = {}  # (model@version, subset) → [n, correct]
        for name, version, reason, label, predicted, count in label_rows:
            names = labels_of.get((name, version), [])
            if predicted is not None and predicted.isdigit() and int(predicted) < len(names):
                predicted = names[int(predicted)]
            for subset in ("random", "all") if reason == "random" else ("all",):
                total = sums.setdefault((f"{name}@{version}", subset), [0, 0])
                total[0] += int(count)
                total[1] += int(count) if predicted == label else 0
        for (model, subset), (n, correct) in sorted(sums.items()):
            labelled.add_metric([model, subset], n)
            accuracy.add_metric([model, subset], correct / n)
        yield devices
        yield rollouts
        yield members
        yield drift
        yield accuracy
        yield labelled
