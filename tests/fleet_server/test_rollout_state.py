"""One owner for rollout state: every (state, action) pair against the table, and a boundary
that keeps any other module from assigning a rollout's state or spelling its names again (before
the table, the engine and the operator actions each assigned states with their own allowed-from
tuples, and the names were spelled in five files)."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fleet_server.models.rollouts import Rollout, RolloutDecision
from fleet_server.services.errors import Conflict
from fleet_server.services.rollouts.state import (
    ACTIVE_STATES,
    DRIVEN_STATES,
    INITIAL_STATE,
    RECORD_ONLY,
    TERMINAL_STATES,
    TRANSITIONS,
    RolloutAction,
    RolloutState,
    TransitionRefused,
    allowed_from,
    transition,
)

ROOT = Path(__file__).resolve().parents[2]
OWNER = ROOT / "fleet_server" / "services" / "rollouts" / "state.py"
AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

S, A = RolloutState, RolloutAction
#: The behaviour, written out by hand: where each action may start and where it leads. The
#: table in state.py must say exactly this (a row added or lost there fails here).
EXPECTED: dict[RolloutAction, tuple[tuple[RolloutState, ...], RolloutState | None]] = {
    # action: (allowed from, leads to; None = stays where it is)
    A.CREATED: ((S.RUNNING,), None),
    A.DEVICES_JOINED: ((S.RUNNING, S.SHADOW), None),
    A.GATE_FAILED: ((S.RUNNING, S.SHADOW), None),
    A.STAGE_PASSED: ((S.RUNNING,), None),
    A.STAGE_STARTED: ((S.RUNNING,), S.RUNNING),
    A.SHADOW_STARTED: ((S.RUNNING,), S.SHADOW),
    A.SHADOW_PASSED: ((S.SHADOW,), S.RUNNING),
    A.AWAIT_APPROVAL: ((S.RUNNING,), S.AWAITING_APPROVAL),
    A.PAUSE: ((S.RUNNING, S.AWAITING_APPROVAL), S.PAUSED),
    A.RESUME: ((S.PAUSED,), S.RUNNING),
    A.APPROVE: ((S.AWAITING_APPROVAL,), S.RUNNING),
    A.ABORT: ((S.RUNNING, S.SHADOW, S.PAUSED, S.AWAITING_APPROVAL), S.ABORTING),
    A.COMPLETE: ((S.RUNNING,), S.COMPLETED),
    A.FINISH_ABORT: ((S.ABORTING,), S.ABORTED),
}


class _Session:
    """Collects what ``transition`` adds (the decision row); nothing else is called."""

    def __init__(self) -> None:
        self.added: list[Any] = []

    def add(self, obj: Any) -> None:
        self.added.append(obj)


def _rollout(state: str) -> Rollout:
    return Rollout(
        id=7,
        name="r",
        model_name="digits",
        model_version="2.0.0",
        selector={},
        strategy={},
        gates={},
        state=state,
        stage=1,
        stage_started_at=AT,
        reason="before",
    )


PAIRS = list(itertools.product(RolloutState, RolloutAction))


def test_the_table_is_the_behaviour_written_out() -> None:
    assert set(EXPECTED) == set(RolloutAction)
    for action, (sources, target) in EXPECTED.items():
        assert allowed_from(action) == sources, action
        for source in sources:
            assert TRANSITIONS[(source, action)] == (target or source), (source, action)
    assert len(TRANSITIONS) == sum(len(sources) for sources, _ in EXPECTED.values())


@pytest.mark.parametrize(("state", "action"), PAIRS, ids=[f"{s}-{a}" for s, a in PAIRS])
def test_every_state_action_pair(state: RolloutState, action: RolloutAction) -> None:
    session: Any = _Session()
    rollout = _rollout(state.value)
    sources, target = EXPECTED[action]
    if state not in sources:
        with pytest.raises(TransitionRefused) as refused:
            transition(session, rollout, action, reason="why", at=AT, actor="op")
        assert refused.value.status_code == 409 and isinstance(refused.value, Conflict)
        assert str(refused.value) == (
            f"cannot {action.value} rollout 7: it is {state.value} "
            f"(allowed from {', '.join(sources)})"
        )
        assert (rollout.state, rollout.reason, rollout.finished_at) == (state, "before", None)
        assert session.added == []  # a refused step records nothing
        return
    got = transition(session, rollout, action, reason="why", at=AT, actor="op", evidence={"n": 1})
    assert got == (target or state)
    assert rollout.state == (target or state) and type(rollout.state) is str
    if target is None:  # a record-only decision leaves the state and its reason alone
        assert rollout.reason == "before"
    else:
        assert rollout.reason == (None if target is S.RUNNING else "why")
    assert rollout.finished_at == (AT if target in TERMINAL_STATES else None)
    [decision] = session.added
    assert isinstance(decision, RolloutDecision)
    assert (decision.rollout_id, decision.stage, decision.action) == (7, 1, action.value)
    assert (decision.actor, decision.reason, decision.evidence, decision.ts) == (
        "op",
        "why",
        {"n": 1},
        AT,
    )


@pytest.mark.parametrize(
    "stored", ["", "RUNNING", "running ", "shadow", "x" * 10_000, "paused\x00", "ab\u202eorted"]
)
def test_an_unknown_stored_state_is_refused_with_one_short_line(stored: str) -> None:
    session: Any = _Session()
    rollout = _rollout(stored)
    for action in RolloutAction:
        with pytest.raises(TransitionRefused) as refused:
            transition(session, rollout, action, reason="why", at=AT)
        assert len(str(refused.value)) < 200 and "\n" not in str(refused.value)
    assert rollout.state == stored and session.added == []


def test_record_only_decisions_never_move_and_terminal_states_are_final() -> None:
    for (state, action), target in TRANSITIONS.items():
        if action in RECORD_ONLY:
            assert target == state, (state, action)
        assert state not in TERMINAL_STATES, (state, action)
    assert set(DRIVEN_STATES) <= set(ACTIVE_STATES)
    assert set(ACTIVE_STATES) | set(TERMINAL_STATES) == set(RolloutState)
    assert not set(ACTIVE_STATES) & set(TERMINAL_STATES)


def test_every_state_but_failed_is_reachable_and_every_active_one_can_end() -> None:
    reached, frontier = {INITIAL_STATE}, [INITIAL_STATE]
    while frontier:
        here = frontier.pop()
        for (state, _), target in TRANSITIONS.items():
            if state == here and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(RolloutState) - {S.FAILED}  # failed: kept for filters, never entered
    for state in ACTIVE_STATES:  # nothing gets stuck: a terminal state is reachable from each
        seen: set[RolloutState] = {state}
        todo: list[RolloutState] = [state]
        while todo:
            here = todo.pop()
            for (source, _), target in TRANSITIONS.items():
                if source == here and target not in seen:
                    seen.add(target)
                    todo.append(target)
        assert seen & set(TERMINAL_STATES), state


# -- the boundary -----------------------------------------------------------------------------
#: The one owner of another concept's state: a retraining pipeline run and its steps (its own
#: transition table in services/pipelines/records.py), not a rollout's.
OTHER_OWNERS = {ROOT / "fleet_server" / "services" / "pipelines" / "records.py"}


def _python_files() -> list[Path]:
    return sorted(
        p for p in (ROOT / "fleet_server").rglob("*.py") if p != OWNER and p not in OTHER_OWNERS
    )


def _assigns_state(node: ast.AST) -> bool:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    flat = []
    while targets:
        target = targets.pop()
        if isinstance(target, ast.Tuple | ast.List):
            targets.extend(target.elts)
        else:
            flat.append(target)
    return any(isinstance(t, ast.Attribute) and t.attr == "state" for t in flat)


def _state_keyword(node: ast.AST) -> bool:
    """``Rollout(state=...)`` or ``.values(state=...)`` with anything but the initial state."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    writes = (isinstance(func, ast.Name) and func.id == "Rollout") or (
        isinstance(func, ast.Attribute) and func.attr == "values"
    )
    for keyword in node.keywords if writes else []:
        if keyword.arg == "state" and ast.unparse(keyword.value) != "INITIAL_STATE.value":
            return True
    if isinstance(node.func, ast.Name) and node.func.id == "setattr" and len(node.args) > 1:
        second = node.args[1]
        return isinstance(second, ast.Constant) and second.value == "state"
    return False


def test_no_module_but_state_py_assigns_a_state() -> None:
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if _assigns_state(node) or _state_keyword(node):
                found.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}")
    assert found == []


def test_the_boundary_catches_what_it_forbids() -> None:
    for code in (
        "rollout.state = 'paused'",
        "r.state, r.reason = 'paused', why",
        "row.state: str = 'running'",
        "Rollout(state='running')",
        "update(Rollout).values(state=RolloutState.ABORTED)",
        "setattr(rollout, 'state', 'paused')",
    ):
        node = ast.parse(code).body[0]
        inner = node.value if isinstance(node, ast.Expr) else node
        assert _assigns_state(node) or _state_keyword(inner), code
    for code in ("Rollout(state=INITIAL_STATE.value)", "list_rollouts(session, state=state)"):
        allowed = ast.parse(code).body[0]
        assert isinstance(allowed, ast.Expr) and not _state_keyword(allowed.value), code


ROLLOUT_MODULES = [
    *sorted((ROOT / "fleet_server" / "services" / "rollouts").glob("*.py")),
    ROOT / "fleet_server" / "api" / "rollouts.py",
    ROOT / "fleet_server" / "client" / "rollouts.py",
    ROOT / "fleet_server" / "client" / "rollouts_cli.py",
    ROOT / "fleet_server" / "services" / "fleet_metrics.py",
]
#: "failed" is also a device status inside a rollout, so only the unambiguous names are checked.
STATE_NAMES = {s.value for s in RolloutState} - {"failed"}


def test_state_names_are_spelled_only_in_the_enum() -> None:
    spelled = []
    for path in ROLLOUT_MODULES:
        if path == OWNER:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in STATE_NAMES:
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    for script in sorted((ROOT / "fleet_server" / "dashboard").glob("*.mjs")):
        spelled += [
            f"{script.name}:{n} {line.strip()}"
            for n, line in enumerate(script.read_text().splitlines(), 1)
            if "state" in line and any(f'"{name}"' in line for name in STATE_NAMES)
        ]
    assert spelled == []


def test_the_client_reads_the_names_without_the_database_stack() -> None:
    code = (
        "import sys, fleet_server.client.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlmodel', 'sqlalchemy', 'pydantic', 'fastapi')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
