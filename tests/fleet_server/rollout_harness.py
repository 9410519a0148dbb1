"""A rollout engine on a real database with a controllable clock, and devices that answer
through the real ingest write path (``write_batch``), as their MQTT messages would."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from edgefleet.contract import DesiredState, Event, ModelRef, State, Telemetry
from fleet_server.messaging.writes import write_batch
from fleet_server.models import Device, ModelVersion, Rollout, RolloutDecision, RolloutDevice
from fleet_server.services.rollouts import RolloutCreate, RolloutEngine
from fleet_server.services.rollouts import service as rollout_service
from fleet_server.services.rollouts.service import RolloutPublic

OLD, NEW = "1.0.0", "2.0.0"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class RecordingPublisher:
    """Records desired states (the engine tests judge decisions, not MQTT delivery; the HIL and
    end-to-end tests cover delivery through a real broker)."""

    sent: list[DesiredState] = field(default_factory=list)

    def publish_desired(self, state: DesiredState) -> None:
        self.sent.append(state)

    def devices(self, version: str | None) -> set[str]:
        return {
            s.device_id
            for s in self.sent
            if (s.model.version if s.model is not None else None) == version
        }


class Harness:
    def __init__(self, engine: Engine, model: str = "digits") -> None:
        self.db = engine
        self.clock = Clock()
        self.publisher = RecordingPublisher()
        self.model = model
        self.engine = self.new_engine()
        self._seq: dict[str, int] = {}
        self.tag = f"t-{secrets.token_hex(3)}"
        with Session(engine) as session:
            for version in (OLD, NEW):
                session.add(
                    ModelVersion(
                        name=model,
                        version=version,
                        format="onnx",
                        precision="fp32",
                        task="classification",
                        sha256="0" * 64,
                        size=1000,
                        signed=True,
                        signature_key_id="k",
                        signature_value="sig",
                        storage_key=f"{model}/{version}.tar.gz",
                        manifest={},
                    )
                )
            session.commit()

    def new_engine(self) -> RolloutEngine:
        """Another engine on the same database: a restarted server or a second replica."""
        return RolloutEngine(
            engine=self.db,
            publisher=self.publisher,
            public_url="http://fleet.test",
            clock=self.clock,
        )

    # -- fleet -------------------------------------------------------------------------------------
    def add_devices(
        self, n: int, *, device_class: str = "rpi4", running: str | None = OLD, prefix: str = "d"
    ) -> list[str]:
        ids = []
        with Session(self.db) as session:
            for _ in range(n):
                device_id = f"{prefix}-{secrets.token_hex(4)}"
                session.add(
                    Device(
                        device_id=device_id,
                        token_hash=secrets.token_hex(32),
                        device_class=device_class,
                        tags=[self.tag],
                        online=True,
                        running_name=self.model if running else None,
                        running_version=running,
                    )
                )
                ids.append(device_id)
            session.commit()
        return ids

    def _next(self, device_id: str) -> int:
        self._seq[device_id] = self._seq.get(device_id, 0) + 1
        return self._seq[device_id]

    def send(self, payloads: list[Any]) -> None:
        write_batch(engine=self.db, items=[(p, self.clock.now) for p in payloads])

    def commit(self, ids: list[str] | set[str], version: str = NEW) -> None:
        """Devices report the update committed (event + state), as the agent does."""
        ref = ModelRef(name=self.model, version=version)
        payloads: list[Any] = []
        for device_id in ids:
            payloads.append(
                Event(
                    device_id=device_id,
                    seq=self._next(device_id),
                    event="update.committed",
                    model=ref,
                )
            )
            payloads.append(self.state(device_id, version))
        self.send(payloads)

    def fail(self, ids: list[str] | set[str], event: str = "update.rolled_back") -> None:
        ref = ModelRef(name=self.model, version=NEW)
        self.send(
            [
                Event(
                    device_id=d,
                    seq=self._next(d),
                    event=event,  # type: ignore[arg-type]
                    model=ref,
                    detail="probation: p95 3.1x the previous model's",
                )
                for d in ids
            ]
        )

    def state(self, device_id: str, version: str | None) -> State:
        running = ModelRef(name=self.model, version=version) if version else None
        return State(
            device_id=device_id,
            seq=self._next(device_id),
            phase="serving",
            running=running,
            desired=running,
            agent_version="test",
        )

    def report_running(self, ids: list[str] | set[str], version: str | None) -> None:
        self.send([self.state(d, version) for d in ids])

    def telemetry(
        self,
        ids: list[str] | set[str],
        *,
        version: str,
        p95: float = 10.0,
        errors: int = 0,
        count: int = 100,
        histogram: list[int] | None = None,
        intervals: int = 3,
    ) -> None:
        payloads = []
        for _ in range(intervals):
            for device_id in ids:
                payloads.append(
                    Telemetry(
                        device_id=device_id,
                        seq=self._next(device_id),
                        interval_s=10.0,
                        model=ModelRef(name=self.model, version=version),
                        inference_count=count,
                        error_count=errors,
                        latency_ms={"p50": p95 / 2, "p95": p95},
                        confidence_histogram=histogram
                        if histogram is not None
                        else [0, 0, 0, 0, 0, 0, 0, 10, 30, 60],
                    )
                )
        self.send(payloads)

    # -- rollouts ----------------------------------------------------------------------------------
    def create(self, **spec: Any) -> RolloutPublic:
        body: dict[str, Any] = {
            "model": self.model,
            "version": NEW,
            "selector": {"tags": [self.tag]},
            "strategy": {"canary_percent": 10, "batches": [50, 100], "soak_s": 60},
            "gates": {
                "error_rate": {"min_samples": 100},
                "confidence_shift": {"min_samples": 100},
            },
        }
        for key, value in spec.items():
            if isinstance(value, dict) and isinstance(body.get(key), dict):
                body[key] = {**body[key], **value}
            else:
                body[key] = value
        with Session(self.db) as session:
            return rollout_service.create_rollout(
                session=session,
                rollouts=self.engine,
                request=RolloutCreate.model_validate(body),
                actor="tester",
                trusted_keys=(),  # the harness's versions are stored as verified
            )

    def rollout(self, rollout_id: int) -> Rollout:
        with Session(self.db) as session:
            row = session.get(Rollout, rollout_id)
            assert row is not None
            return row

    def members(self, rollout_id: int, status: str | None = None) -> list[str]:
        with Session(self.db) as session:
            query = select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)
            if status is not None:
                query = query.where(RolloutDevice.status == status)
            return [m.device_id for m in session.exec(query.order_by(col(RolloutDevice.position)))]

    def report_classes(self, rollout_id: int, status: str = "assigned") -> list[str | None]:
        with Session(self.db) as session:
            query = select(RolloutDevice).where(
                RolloutDevice.rollout_id == rollout_id, RolloutDevice.status == status
            )
            return [m.device_class for m in session.exec(query)]

    def decisions(self, rollout_id: int) -> list[tuple[str, int]]:
        with Session(self.db) as session:
            rows = session.exec(
                select(RolloutDecision)
                .where(RolloutDecision.rollout_id == rollout_id)
                .order_by(col(RolloutDecision.id))
            )
            return [(d.action, d.stage) for d in rows]

    def decision(self, rollout_id: int, action: str) -> RolloutDecision:
        with Session(self.db) as session:
            row = session.exec(
                select(RolloutDecision).where(
                    RolloutDecision.rollout_id == rollout_id, RolloutDecision.action == action
                )
            ).first()
            assert row is not None, f"no {action} decision"
            return row

    def desired(self, device_id: str) -> str | None:
        with Session(self.db) as session:
            device = session.get(Device, device_id)
            assert device is not None
            return device.desired_version
