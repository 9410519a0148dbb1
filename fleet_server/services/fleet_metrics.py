"""Fleet gauges for ``/metrics``, read from the database at scrape time (one source of truth,
right on every replica): devices online/offline, rollouts by state, devices per status in each
active rollout."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from fleet_server.models import Device, DriftStatus, Rollout, RolloutDevice
from fleet_server.models.rollouts import ACTIVE_STATES, ROLLOUT_STATES

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
        try:
            with Session(self._engine) as session:
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
                        sa_select(col(Device.online), func.count()).group_by(col(Device.online))
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
        for state in ROLLOUT_STATES:
            rollouts.add_metric([state], by_state.get(state, 0))
        for rollout_id, name, version, status, count in active:
            members.add_metric([str(rollout_id), f"{name}@{version}", status], count)
        for name, version, detector, status in verdicts:
            drift.add_metric([f"{name}@{version}", detector, status], 1 if status == "drift" else 0)
        yield devices
        yield rollouts
        yield members
        yield drift
