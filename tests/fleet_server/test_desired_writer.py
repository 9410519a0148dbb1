"""One desired-state writer and publisher (``services/desired.py``) for assignments, pins,
capture-policy republishes and rollouts: what one write does on a real database, and a boundary
that keeps a second writer from growing back (there were two, plus a third for republishes)."""

from __future__ import annotations

import ast
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from edgefleet.contract import DesiredState
from edgefleet.mqtt import MqttError
from fleet_server.db import make_engine, migrate
from fleet_server.models import Device
from fleet_server.services.desired import Keep, publish_desired, stamp_resent, write_desired
from fleet_server.services.rollouts.members import RESYNC_AFTER_S
from tests.fleet_server.helpers import unique_id
from tests.fleet_server.rollout_harness import NEW, OLD, Harness

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OWNER = ROOT / "fleet_server" / "services" / "desired.py"
AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NEXT = ("digits", "3.0.0")
DESIRED_COLUMNS = {"desired_name", "desired_version", "desired_revision", "desired_at"}


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _devices(db: Engine, n: int, **columns: Any) -> list[str]:
    ids = [unique_id(f"w{i}") for i in range(n)]
    with Session(db) as session:
        for device_id in ids:
            session.add(Device(device_id=device_id, token_hash=secrets.token_hex(32), **columns))
        session.commit()
    return ids


def _rows(db: Engine, ids: list[str]) -> dict[str, tuple[object, ...]]:
    with Session(db) as session:
        rows = session.exec(select(Device).where(col(Device.device_id).in_(ids)))
        return {
            d.device_id: (d.desired_name, d.desired_version, d.desired_revision, d.pinned_name)
            for d in rows
        }


def test_one_write_sets_keeps_clears_and_respects_pins(db: Engine) -> None:
    free = _devices(db, 3, desired_name="digits", desired_version="1.0.0", desired_revision=4)
    pinned = _devices(db, 1, pinned_name="digits", pinned_version="1.0.0", desired_revision=2)
    with Session(db) as session:
        write_desired(
            session=session,
            device_ids=free + pinned,
            model=("digits", "2.0.0"),
            at=AT,
            only_unpinned=True,
        )
        session.commit()
    rows = _rows(db, free + pinned)
    assert all(rows[d] == ("digits", "2.0.0", 5, None) for d in free)
    assert rows[pinned[0]] == (None, None, 2, "digits")  # the pin won, untouched
    with Session(db) as session:
        write_desired(session=session, device_ids=free[:1], model=Keep.MODEL, at=AT)
        write_desired(session=session, device_ids=free[1:2], model=None, at=AT)
        write_desired(
            session=session, device_ids=free[2:], model=("digits", "3.0.0"), at=AT, pin=True
        )
        session.rollback()  # not committed by the writer: the caller's transaction decides
    assert _rows(db, free) == {d: rows[d] for d in free}
    with Session(db) as session:
        write_desired(session=session, device_ids=free[:1], model=Keep.MODEL, at=AT)
        write_desired(session=session, device_ids=free[1:2], model=None, at=AT)
        write_desired(
            session=session, device_ids=free[2:], model=("digits", "3.0.0"), at=AT, pin=True
        )
        session.commit()
    after = _rows(db, free)
    assert after[free[0]] == ("digits", "2.0.0", 6, None)  # same model, next revision
    assert after[free[1]] == (None, None, 6, None)  # no model
    assert after[free[2]] == ("digits", "3.0.0", 6, "digits")  # pinned to what it now runs
    later = AT + timedelta(seconds=31)
    with Session(db) as session:  # a resent state: same revision, same model, a new stamp
        stamp_resent(session=session, device_ids=free[:1], at=later)
        session.commit()
        device = session.get(Device, free[0])
        assert device is not None and device.desired_at == later
    assert _rows(db, free) == after


def test_a_pin_must_name_a_version() -> None:
    with pytest.raises(ValueError, match="a pin names a model version"):
        write_desired(session=None, device_ids=["x"], model=Keep.MODEL, at=AT, pin=True)  # type: ignore[arg-type]


def test_a_large_write_is_chunked_and_published_from_the_committed_rows(db: Engine) -> None:
    ids = _devices(db, 601)

    class Flaky:
        """Refuses every 100th publish: the rest still go out (the bus republishes later)."""

        def __init__(self) -> None:
            self.sent: list[DesiredState] = []
            self.calls = 0

        def publish_desired(self, state: DesiredState) -> None:
            self.calls += 1
            if self.calls % 100 == 0:
                raise MqttError("refused")
            self.sent.append(state)

    with Session(db, expire_on_commit=False) as session:  # loaded before: must not be reused
        before = list(session.exec(select(Device).where(col(Device.device_id).in_(ids[:10]))))
        write_desired(session=session, device_ids=ids, model=None, at=AT)
        session.commit()
        publisher = Flaky()
        sent = publish_desired(
            session=session, publisher=publisher, public_url="http://x", device_ids=ids
        )
    assert len(before) == 10 and publisher.calls == 601 and sent == 601 - 6
    assert {s.seq for s in publisher.sent} == {1} and {s.model for s in publisher.sent} == {None}


def test_a_rollout_resends_an_unacknowledged_state_at_most_every_resync_period(db: Engine) -> None:
    h = Harness(db)
    ids = h.add_devices(2)
    h.create(strategy={"canary_percent": 100, "batches": [100], "soak_s": 0})
    first = {s.device_id: s for s in h.publisher.sent}
    assert set(first) == set(ids) and len(h.publisher.sent) == 2
    h.clock.advance(RESYNC_AFTER_S - 1)
    h.engine.tick()
    assert len(h.publisher.sent) == 2  # not yet
    h.clock.advance(2)
    h.engine.tick()
    again = h.publisher.sent[2:]
    assert sorted(s.device_id for s in again) == sorted(ids)
    for state in again:  # the same revision and model, stamped now
        assert (state.seq, state.model) == (
            first[state.device_id].seq,
            first[state.device_id].model,
        )
        assert state.ts == h.clock.now
    h.clock.advance(RESYNC_AFTER_S - 1)
    h.engine.tick()
    assert len(h.publisher.sent) == 4  # the stamp holds the next resend back
    h.report_running(ids[:1], OLD)  # the first still reports the old version as its desired one
    h.send([h.state(ids[1], NEW)])  # the second acknowledges the new one: not resent again
    h.clock.advance(2)
    h.engine.tick()
    assert [s.device_id for s in h.publisher.sent[4:]] == [ids[0]]


# -- the boundary -------------------------------------------------------------------------------
def _writes_desired(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "values":
            return any(k.arg in DESIRED_COLUMNS for k in node.keywords)
    if isinstance(node, ast.Assign | ast.AugAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        flat: list[ast.expr] = []
        for target in targets:
            flat.extend(target.elts if isinstance(target, ast.Tuple) else [target])
        return any(isinstance(t, ast.Attribute) and t.attr in DESIRED_COLUMNS for t in flat)
    return False


def test_only_the_desired_module_writes_a_desired_state() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        for path in sorted((ROOT / "fleet_server").rglob("*.py"))
        if path != OWNER and "migrations" not in path.parts
        for node in ast.walk(ast.parse(path.read_text()))
        if _writes_desired(node)
    ]
    assert found == []
    for code in (
        "update(Device).values(desired_revision=col(Device.desired_revision) + 1)",
        "device.desired_name = 'digits'",
        "d.desired_name, d.desired_version = ref",
        "device.desired_revision += 1",
    ):
        node = ast.parse(code).body[0]
        assert _writes_desired(node.value if isinstance(node, ast.Expr) else node), code
