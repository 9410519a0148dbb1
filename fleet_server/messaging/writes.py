"""One ingest batch → one transaction, identical on SQLite and PostgreSQL.

No ORM unit of work: telemetry and event rows go in with one
``INSERT ... ON CONFLICT (device_id, seq) DO NOTHING`` per table (on PostgreSQL one statement
with array parameters, :mod:`.pg_arrays`; else an executemany, :mod:`.inserts`). A row not
inserted was already stored, so a QoS 1 redelivery is counted as a duplicate, never stored
twice, and a concurrent writer cannot fail the batch. Device rows are read once, updated in
memory in message order with the same state/status/telemetry rules as before, and written back
with one ``UPDATE`` per set of changed columns (only each device's final values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import SQLModel

from edgefleet.contract import Event, Payload, ShadowReport, State, Status, Telemetry
from fleet_server.messaging.sanity import (
    DeviceClock,
    SeqOrder,
    log_reset,
    seq_order,
    status_is_newer,
)
from fleet_server.messaging.statements import Statements, StatementsName, statements_for

#: Device columns ingest reads to apply its ordering rules.
_DEVICE_RULE_COLUMNS = ("device_id", "last_seen", "status_ts", "state_seq", "telemetry_seq")


@dataclass(frozen=True)
class WriteResult:
    stored: int
    duplicates: int
    unknown_devices: int
    #: State/telemetry seqs far below the last applied: a restarted counter, applied.
    seq_resets: int = 0


def write_batch(
    *,
    engine: Engine,
    items: Sequence[tuple[Payload, datetime]],
    seq_reset_window: int = DeviceClock.seq_reset_window,
    statements: StatementsName = "arrays",
) -> WriteResult:
    """``statements``: how rows reach PostgreSQL (:mod:`.statements`; SQLite: executemany)."""
    device_table = _table("device")
    with engine.begin() as conn:
        how = statements_for(conn.dialect.name, statements)
        if conn.dialect.name == "sqlite":
            # Take the write lock before reading: several writers (ingest worker processes)
            # then queue on the busy timeout instead of failing to upgrade a read transaction.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        ids = {payload.device_id for payload, _ in items}
        columns = [device_table.c[name] for name in _DEVICE_RULE_COLUMNS]
        current: dict[str, dict[str, Any]] = {
            row.device_id: dict(row._mapping)
            for row in conn.execute(
                # Row locks in one global order: replicas sharing ingest never interleave a
                # device's read-modify-write, and never deadlock (SQLite locks the database).
                select(*columns)
                .where(device_table.c.device_id.in_(ids))
                # A decommissioned device's messages are refused (counted as unknown).
                .where(device_table.c.decommissioned_at.is_(None))
                .order_by(device_table.c.device_id)
                .with_for_update()
            )
        }
        changes: dict[str, dict[str, Any]] = {}
        telemetry_rows: dict[tuple[str, int], dict[str, Any]] = {}
        event_rows: dict[tuple[str, int], dict[str, Any]] = {}
        shadow_rows: dict[tuple[str, int], dict[str, Any]] = {}
        unknown = stored = duplicates = 0
        resets: list[int] = []  # one entry per reset (a list: the rule helpers append)
        for payload, received_at in items:
            device = current.get(payload.device_id)
            if device is None:
                unknown += 1
                continue
            changed = changes.setdefault(payload.device_id, {})
            if device["last_seen"] is None or received_at > device["last_seen"]:
                device["last_seen"] = changed["last_seen"] = received_at
            if isinstance(payload, Telemetry):
                key = (payload.device_id, payload.seq)
                if key in telemetry_rows:
                    duplicates += 1  # repeated within this batch
                else:
                    telemetry_rows[key] = _telemetry_row(payload, received_at)
                    if payload.shadow is not None:
                        shadow_rows[key] = _shadow_row(payload, payload.shadow)
                _apply_telemetry(device, changed, payload, seq_reset_window, resets)
            elif isinstance(payload, Event):
                key = (payload.device_id, payload.seq)
                if key in event_rows:
                    duplicates += 1
                else:
                    event_rows[key] = _event_row(payload, received_at)
            elif isinstance(payload, State):
                if _apply_state(device, changed, payload, seq_reset_window, resets):
                    stored += 1
                else:
                    duplicates += 1
            elif isinstance(payload, Status):
                if _apply_status(device, changed, payload, received_at):
                    stored += 1
                else:
                    duplicates += 1
        for table, rows in ((_table("telemetry"), telemetry_rows), (_table("event"), event_rows)):
            inserted = how.insert_new(conn=conn, table=table, rows=list(rows.values()))
            stored += inserted
            duplicates += len(rows) - inserted
        # Stored with their telemetry message, and skipped with it when already stored (a
        # redelivery): not counted again in stored/duplicates.
        how.insert_new(conn=conn, table=_table("shadow_reports"), rows=list(shadow_rows.values()))
        _update_devices(conn, device_table, changes, how)
    return WriteResult(
        stored=stored, duplicates=duplicates, unknown_devices=unknown, seq_resets=len(resets)
    )


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` says the database could not be reached or could not answer now
    (connection refused or cut, server shutting down, pool exhausted, SQLite locked), as
    opposed to the database refusing these rows (a data or integrity error). A transient
    error is retried for as long as it lasts; refused rows are isolated and dropped."""
    if isinstance(err, DBAPIError) and err.connection_invalidated:
        return True
    return isinstance(
        err, OperationalError | InterfaceError | DisconnectionError | PoolTimeoutError
    )


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def _update_devices(
    conn: Connection, table: Table, changes: dict[str, dict[str, Any]], how: Statements
) -> None:
    """One UPDATE per distinct set of changed columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for device_id, changed in changes.items():
        newest = changed.get("last_telemetry")
        if isinstance(newest, Telemetry):
            changed["last_telemetry"] = _last_telemetry(newest)
        if changed:
            groups.setdefault(tuple(sorted(changed)), []).append({"_id": device_id, **changed})
    for names, params in groups.items():
        how.update_rows(conn=conn, table=table, key="device_id", names=names, rows=params)


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
        # Schema 2: summed into drift_input_bucket by the drift job (services/drift/inputs.py).
        "inputs": p.inputs.model_dump() if p.inputs else None,
        "class_counts": dict(p.class_counts),
    }


def _shadow_row(p: Telemetry, report: ShadowReport) -> dict[str, Any]:
    """Schema 3: the shadow figures of one interval (read by services/shadow.py)."""
    figures = report.model_dump(
        mode="json", exclude={"model", "paired", "skipped", "disagreements"}
    )
    figures["serving"] = p.model.model_dump() if p.model else None
    return {
        "device_id": p.device_id,
        "seq": p.seq,
        "ts": p.ts,
        "model_name": report.model.name,
        "model_version": report.model.version,
        "paired": report.paired,
        "skipped": report.skipped,
        "disagreements": report.disagreements,
        "figures": figures,
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


def _apply_telemetry(
    device: dict[str, Any], changed: dict[str, Any], p: Telemetry, window: int, resets: list[int]
) -> None:
    if not _advances(device, "telemetry_seq", p, window, resets):
        return
    device["telemetry_seq"] = changed["telemetry_seq"] = p.seq
    changed["last_telemetry"] = p  # summarised once, for the newest only (_last_telemetry)


def _last_telemetry(p: Telemetry) -> dict[str, Any]:
    return {
        "ts": p.ts.isoformat(),
        "seq": p.seq,
        "model": p.model.model_dump() if p.model else None,
        "inference_count": p.inference_count,
        "error_count": p.error_count,
        "latency_ms": p.latency_ms.model_dump() if p.latency_ms else None,
    }


def _advances(
    device: dict[str, Any], column: str, p: Telemetry | State, window: int, resets: list[int]
) -> bool:
    """Does ``p`` move the device's ``column`` forward (newer, or a restarted counter)?"""
    order = seq_order(device[column], p.seq, window=window)
    if order is SeqOrder.RESET:
        log_reset(p.device_id, column, device[column], p.seq)
        resets.append(p.seq)
    return order is not SeqOrder.STALE


def _apply_state(
    device: dict[str, Any], changed: dict[str, Any], p: State, window: int, resets: list[int]
) -> bool:
    if not _advances(device, "state_seq", p, window, resets):
        return False
    device["state_seq"] = p.seq
    changed.update(
        state_seq=p.seq,
        phase=p.phase,
        running_name=p.running.name if p.running else None,
        running_version=p.running.version if p.running else None,
        reported_desired_name=p.desired.name if p.desired else None,
        reported_desired_version=p.desired.version if p.desired else None,
        agent_version=p.agent_version,
        last_error=p.last_error,
    )
    if p.device_class is not None:
        changed["device_class"] = p.device_class
    return True


def _apply_status(
    device: dict[str, Any], changed: dict[str, Any], p: Status, received_at: datetime
) -> bool:
    """``status_ts`` holds when the server received the status it applied (sanity.py)."""
    if not status_is_newer(device["status_ts"], received_at):
        return False
    device["status_ts"] = changed["status_ts"] = received_at
    changed["online"] = p.status == "online"
    return True
