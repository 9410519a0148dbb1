"""One ingest batch → one transaction, identical on SQLite and PostgreSQL.

Telemetry and event rows are skipped when (device_id, seq) is already stored or repeated in the
batch, and inserted with ON CONFLICT DO NOTHING so a concurrent writer cannot fail the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, col, select

from edgefleet.contract import Event, Payload, State, Status, Telemetry
from fleet_server.models import Device


@dataclass(frozen=True)
class WriteResult:
    stored: int
    duplicates: int
    unknown_devices: int


def write_batch(*, engine: Engine, items: Sequence[tuple[Payload, datetime]]) -> WriteResult:
    with Session(engine) as session:
        ids = {payload.device_id for payload, _ in items}
        devices = {
            d.device_id: d
            for d in session.exec(select(Device).where(col(Device.device_id).in_(ids)))
        }
        known = [(p, at) for p, at in items if p.device_id in devices]
        unknown = len(items) - len(known)
        stored = duplicates = 0
        telemetry_rows = [_telemetry_row(p, at) for p, at in known if isinstance(p, Telemetry)]
        event_rows = [_event_row(p, at) for p, at in known if isinstance(p, Event)]
        for table, rows in (
            (_table("telemetry"), telemetry_rows),
            (_table("event"), event_rows),
        ):
            fresh = _new_rows(session, table, rows)
            duplicates += len(rows) - len(fresh)
            if fresh:
                session.execute(_insert_ignore(engine, table), fresh)
            stored += len(fresh)
        for payload, received_at in known:
            device = devices[payload.device_id]
            if device.last_seen is None or received_at > device.last_seen:
                device.last_seen = received_at
            if isinstance(payload, Telemetry):
                _apply_telemetry(device, payload)
            elif isinstance(payload, State):
                if _apply_state(device, payload):
                    stored += 1
                else:
                    duplicates += 1
            elif isinstance(payload, Status):
                if _apply_status(device, payload):
                    stored += 1
                else:
                    duplicates += 1
        session.commit()
    return WriteResult(stored=stored, duplicates=duplicates, unknown_devices=unknown)


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def _new_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose (device_id, seq) is neither stored nor earlier in this batch."""
    if not rows:
        return []
    keys = {(r["device_id"], r["seq"]) for r in rows}
    key_cols = tuple_(table.c.device_id, table.c.seq)
    stored: set[tuple[str, int]] = set()
    key_list = sorted(keys)
    for start in range(0, len(key_list), 400):
        chunk = key_list[start : start + 400]
        result = session.execute(select(table.c.device_id, table.c.seq).where(key_cols.in_(chunk)))
        stored.update((row[0], row[1]) for row in result)
    fresh: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for row in rows:
        key = (row["device_id"], row["seq"])
        if key in stored or key in seen:
            continue
        seen.add(key)
        fresh.append(row)
    return fresh


def _insert_ignore(engine: Engine, table: Table) -> Any:
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["device_id", "seq"])
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["device_id", "seq"])
    raise ValueError(f"unsupported database dialect {dialect!r} (use SQLite or PostgreSQL)")


def _telemetry_row(p: Telemetry, received_at: datetime) -> dict[str, Any]:
    return {
        "device_id": p.device_id,
        "seq": p.seq,
        "ts": p.ts,
        "received_at": received_at,
        "interval_s": p.interval_s,
        "model": p.model.model_dump() if p.model else None,
        "inference_count": p.inference_count,
        "error_count": p.error_count,
        "errors": dict(p.errors),
        "latency_ms": p.latency_ms.model_dump() if p.latency_ms else None,
        "dropped": p.dropped,
        "system": dict(p.system),
        "confidence_histogram": list(p.confidence_histogram),
    }


def _event_row(p: Event, received_at: datetime) -> dict[str, Any]:
    return {
        "device_id": p.device_id,
        "seq": p.seq,
        "ts": p.ts,
        "received_at": received_at,
        "event": p.event,
        "model": p.model.model_dump() if p.model else None,
        "progress": p.progress,
        "detail": p.detail,
    }


def _apply_telemetry(device: Device, p: Telemetry) -> None:
    if device.telemetry_seq is not None and p.seq <= device.telemetry_seq:
        return
    device.telemetry_seq = p.seq
    device.last_telemetry = {
        "ts": p.ts.isoformat(),
        "seq": p.seq,
        "model": p.model.model_dump() if p.model else None,
        "inference_count": p.inference_count,
        "error_count": p.error_count,
        "latency_ms": p.latency_ms.model_dump() if p.latency_ms else None,
    }


def _apply_state(device: Device, p: State) -> bool:
    if device.state_seq is not None and p.seq <= device.state_seq:
        return False
    device.state_seq = p.seq
    device.phase = p.phase
    device.running_name = p.running.name if p.running else None
    device.running_version = p.running.version if p.running else None
    device.reported_desired_name = p.desired.name if p.desired else None
    device.reported_desired_version = p.desired.version if p.desired else None
    device.agent_version = p.agent_version
    device.last_error = p.last_error
    if p.device_class is not None:
        device.device_class = p.device_class
    return True


def _apply_status(device: Device, p: Status) -> bool:
    if device.status_ts is not None and p.ts < device.status_ts:
        return False
    device.status_ts = p.ts
    device.online = p.status == "online"
    return True
