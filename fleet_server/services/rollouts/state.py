"""The one owner of a rollout's state: the states, the actions, the table ``(state, action) →
state`` and :func:`transition`, which checks a step against the table, sets the state and records
the decision. The engine, the operator actions, the API and the client all go through here;
``tests/fleet_server/test_rollout_state.py`` keeps any other module from assigning a state.

::

    running ──shadow_started──▶ shadowing ──shadow_passed──▶ running (the canary; or abort)
    running ──pause──▶ paused ──resume──▶ running
       ├──await_approval──▶ awaiting_approval ──approve──▶ running (then stage_started)
       ├──completed──▶ completed
       └──abort (also from paused, awaiting_approval)──▶ aborting ──aborted──▶ aborted

Record-only actions (``created``, ``devices_joined``, ``gate_failed``, ``stage_passed``) are
decisions taken in a state that leave it as it is; they are rows of the table too, so a decision
is never recorded in a state it does not belong to. The shadow stage (the candidate runs beside
the old model and answers nothing) is its own state, entered right after ``created`` and left
for the canary (``shadow_passed``) or for ``aborting``; it cannot be paused (a resume would
skip it).

Standard library only at module level: the operator client (``edgefleet fleet rollouts``, which
runs without the server's database stack) reads the same names.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from fleet_server.services.errors import Conflict

if TYPE_CHECKING:
    from datetime import datetime

    from sqlmodel import Session

    from fleet_server.models.rollouts import Rollout

log = logging.getLogger(__name__)


class RolloutState(StrEnum):
    """What a rollout is doing; the value is what the ``rollout.state`` column stores."""

    RUNNING = "running"
    #: The shadow stage before the canary: members run the candidate in shadow only.
    SHADOW = "shadowing"
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting_approval"
    ABORTING = "aborting"
    COMPLETED = "completed"
    ABORTED = "aborted"
    #: No transition leads here today; kept so filters and rows that name it stay valid.
    FAILED = "failed"


class RolloutAction(StrEnum):
    """What happened to a rollout; the value is the ``action`` of the decision it records."""

    CREATED = "created"
    DEVICES_JOINED = "devices_joined"
    GATE_FAILED = "gate_failed"
    STAGE_PASSED = "stage_passed"
    STAGE_STARTED = "stage_started"
    SHADOW_STARTED = "shadow_started"
    SHADOW_PASSED = "shadow_passed"
    AWAIT_APPROVAL = "await_approval"
    PAUSE = "pause"
    RESUME = "resume"
    APPROVE = "approve"
    ABORT = "abort"
    COMPLETE = "completed"
    FINISH_ABORT = "aborted"


S = RolloutState
A = RolloutAction

#: The state a new rollout starts in (it then records ``created`` there).
INITIAL_STATE: Final = S.RUNNING

#: Every allowed step. A pair that is not here is refused with :class:`TransitionRefused`.
TRANSITIONS: Final[dict[tuple[RolloutState, RolloutAction], RolloutState]] = {
    (S.RUNNING, A.CREATED): S.RUNNING,
    (S.RUNNING, A.DEVICES_JOINED): S.RUNNING,
    (S.RUNNING, A.GATE_FAILED): S.RUNNING,
    (S.RUNNING, A.STAGE_PASSED): S.RUNNING,
    (S.RUNNING, A.STAGE_STARTED): S.RUNNING,
    (S.RUNNING, A.SHADOW_STARTED): S.SHADOW,
    (S.SHADOW, A.GATE_FAILED): S.SHADOW,
    (S.SHADOW, A.DEVICES_JOINED): S.SHADOW,
    (S.SHADOW, A.SHADOW_PASSED): S.RUNNING,
    (S.SHADOW, A.ABORT): S.ABORTING,
    (S.RUNNING, A.AWAIT_APPROVAL): S.AWAITING_APPROVAL,
    (S.RUNNING, A.PAUSE): S.PAUSED,
    (S.AWAITING_APPROVAL, A.PAUSE): S.PAUSED,
    (S.PAUSED, A.RESUME): S.RUNNING,
    (S.AWAITING_APPROVAL, A.APPROVE): S.RUNNING,
    (S.RUNNING, A.ABORT): S.ABORTING,
    (S.PAUSED, A.ABORT): S.ABORTING,
    (S.AWAITING_APPROVAL, A.ABORT): S.ABORTING,
    (S.RUNNING, A.COMPLETE): S.COMPLETED,
    (S.ABORTING, A.FINISH_ABORT): S.ABORTED,
}

#: Decisions that leave the state (and the rollout's reason) as they are.
RECORD_ONLY: Final = frozenset({A.CREATED, A.DEVICES_JOINED, A.GATE_FAILED, A.STAGE_PASSED})
#: The engine's tick steps these; ``paused`` and ``awaiting_approval`` wait for an operator.
DRIVEN_STATES: Final = (S.RUNNING, S.SHADOW, S.ABORTING)
TERMINAL_STATES: Final = (S.COMPLETED, S.ABORTED, S.FAILED)
#: A device in a rollout in one of these is not free for another rollout.
ACTIVE_STATES: Final = tuple(s for s in RolloutState if s not in TERMINAL_STATES)
#: Operator actions (``POST /rollouts/{id}/<action>``, ``edgefleet fleet rollouts <action>``).
OPERATOR_ACTIONS: Final = (A.PAUSE, A.RESUME, A.APPROVE, A.ABORT)

del S, A


class TransitionRefused(Conflict):
    """The table has no row for the rollout's state and this action (the API's 409)."""


def operator_actions(state: str) -> list[str]:
    """The operator actions the table allows from ``state`` (what a console may offer)."""
    try:
        current = RolloutState(state)
    except ValueError:
        return []
    return [a.value for a in OPERATOR_ACTIONS if (current, a) in TRANSITIONS]


def allowed_from(action: RolloutAction) -> tuple[RolloutState, ...]:
    """The states in which ``action`` is allowed, in the enum's order."""
    return tuple(s for s in RolloutState if (s, action) in TRANSITIONS)


def next_state(rollout_id: int | None, state: str, action: RolloutAction) -> RolloutState:
    """Where ``action`` takes a rollout in ``state``, or :class:`TransitionRefused`."""
    try:
        current = RolloutState(state)
    except ValueError:
        current = None
    target = None if current is None else TRANSITIONS.get((current, action))
    if target is None:
        allowed = ", ".join(allowed_from(action)) or "nowhere"
        raise TransitionRefused(
            f"cannot {action.value} rollout {rollout_id}: it is {state[:40]} "
            f"(allowed from {allowed})"
        )
    return target


def transition(
    session: Session,
    rollout: Rollout,
    action: RolloutAction,
    *,
    reason: str,
    at: datetime,
    actor: str = "engine",
    evidence: dict[str, Any] | None = None,
) -> RolloutState:
    """Check ``action`` against the table, move the rollout and record the decision.

    A move sets the state and the rollout's reason (none while running again) and, into a
    terminal state, ``finished_at``; a record-only action changes neither. The decision row
    carries the stage the rollout is in and ``evidence`` (the numbers behind it)."""
    # Imported here: the client reads this module's names without the database stack.
    from fleet_server.models.rollouts import RolloutDecision

    target = next_state(rollout.id, rollout.state, action)
    if action not in RECORD_ONLY:
        rollout.state = target.value
        rollout.reason = None if target is RolloutState.RUNNING else reason[:2000]
        if target in TERMINAL_STATES:
            rollout.finished_at = at
    assert rollout.id is not None
    session.add(
        RolloutDecision(
            rollout_id=rollout.id,
            ts=at,
            stage=rollout.stage,
            action=action.value,
            actor=actor,
            reason=reason[:2000],
            evidence=evidence or {},
        )
    )
    log.info(
        "rollout decision",
        extra={
            "rollout_id": rollout.id,
            "action": action.value,
            "stage": rollout.stage,
            "state": rollout.state,
            "why": reason,
        },
    )
    return target
