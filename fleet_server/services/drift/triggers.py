"""Retraining triggers beyond drift, per model name (``drift.triggers`` in the settings):

- ``accuracy_drop``: a version's accuracy on the labelled samples captured in the last
  ``window_s`` fell more than ``max_drop`` below its accuracy on those captured before — a
  detector like the drift ones (``label_accuracy_drop``: ok / drift / insufficient, its alert
  closes when the accuracy is back);
- ``labelled_count``: ``every`` more samples of the model were labelled since it last fired
  (``labelled_samples``; status value = labelled since then);
- ``schedule``: every ``every_s`` seconds (``schedule``; the clock starts at the first run, so
  adding a schedule or restarting the server does not retrain at once).

The two event triggers keep their state in ``drift_status`` under version ``*`` (``since`` = when
they last fired) and open an alert that is closed at once; every alert says in ``detail`` what
fired and why, and goes through the same retraining backends and per-model cooldown as drift.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, func, select

from fleet_server.models import DriftStatus
from fleet_server.models.samples import Sample
from fleet_server.services.drift.aggregate import DriftResult, Status
from fleet_server.services.quality.service import label_counts

#: ``model_version`` of a trigger about the whole model name.
ALL_VERSIONS = "*"


class AccuracyDropTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_drop: float = Field(
        default=0.05, gt=0, le=1, description="Accuracy fall (absolute) that fires it."
    )
    min_samples: int = Field(
        default=50, ge=1, description="Labelled samples needed on each side, else insufficient."
    )
    window_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        le=365 * 86_400,
        description="'Recent': samples captured this long before the run; the rest is before.",
    )


class LabelledCountTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    every: int = Field(ge=1, le=10_000_000, description="Fire per this many new labels.")


class ScheduleTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    every_s: float = Field(
        ge=60, le=366 * 86_400, description="Fire this often (seconds; 604800 = weekly)."
    )


class ModelTriggers(BaseModel):
    """The retraining triggers of one model name; each off when None."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accuracy_drop: AccuracyDropTrigger | None = Field(
        default=None, description="Accuracy on labelled samples fell."
    )
    labelled_count: LabelledCountTrigger | None = Field(
        default=None, description="Enough new labelled samples to retrain on."
    )
    schedule: ScheduleTrigger | None = Field(default=None, description="A fixed period.")


@dataclass(frozen=True)
class Fired:
    """An event trigger that fired: the alert to open (closed at once)."""

    model: str
    result: DriftResult


Record = Callable[[str, str, DriftResult], None]


def judge_triggers(
    session: Session,
    now: datetime,
    triggers: dict[str, ModelTriggers],
    record: Record,
) -> list[Fired]:
    """Evaluate every model's triggers; ``record`` stores a detector-like verdict (with its
    alert open/close); the returned events are opened by the caller."""
    fired: list[Fired] = []
    for name, config in sorted(triggers.items()):
        if config.accuracy_drop is not None:
            for version in _labelled_versions(session, name):
                record(name, version, _accuracy_drop(session, now, name, version,
                                                     config.accuracy_drop))  # fmt: skip
        if config.labelled_count is not None:
            event = _labelled_count(session, now, name, config.labelled_count)
            if event is not None:
                fired.append(Fired(name, event))
        if config.schedule is not None:
            event = _schedule(session, now, name, config.schedule)
            if event is not None:
                fired.append(Fired(name, event))
    return fired


def _labelled_versions(session: Session, name: str) -> list[str]:
    return list(
        session.exec(
            select(Sample.model_version)
            .where(Sample.model_name == name, col(Sample.labelled).is_(True))
            .distinct()
            .order_by(col(Sample.model_version))
        ).all()
    )


def _accuracy_drop(
    session: Session, now: datetime, name: str, version: str, config: AccuracyDropTrigger
) -> DriftResult:
    split = now - timedelta(seconds=config.window_s)
    before = label_counts(session, name, [version], until=split)
    recent = label_counts(session, name, [version], since=split)
    detector = "label_accuracy_drop"
    if min(before.labelled, recent.labelled) < config.min_samples:
        detail = f"labelled samples: before {before.labelled}, recent {recent.labelled}"
        return DriftResult(detector, "insufficient", None, config.max_drop, recent.labelled,
                           before.labelled, detail)  # fmt: skip
    assert before.accuracy is not None and recent.accuracy is not None
    drop = before.accuracy - recent.accuracy
    status: Status = "drift" if drop > config.max_drop else "ok"
    detail = (
        f"accuracy on labelled samples {before.accuracy:.4f} ({before.correct}/{before.labelled}) "
        f"→ {recent.accuracy:.4f} ({recent.correct}/{recent.labelled}) in the last "
        f"{config.window_s:.0f} s: drop {drop:.4f} (max {config.max_drop})"
    )
    return DriftResult(
        detector, status, drop, config.max_drop, recent.labelled, before.labelled, detail
    )


def _state(session: Session, name: str, detector: str, now: datetime) -> DriftStatus:
    """The trigger's state row (created at the first run: the clock starts then)."""
    row = session.get(DriftStatus, (name, ALL_VERSIONS, detector))
    if row is None:
        row = DriftStatus(
            model_name=name, model_version=ALL_VERSIONS, detector=detector, status="ok",
            threshold=0.0, samples=0, reference_samples=0, since=now, evaluated_at=now,
        )  # fmt: skip
    return row


def _labelled_count(
    session: Session, now: datetime, name: str, config: LabelledCountTrigger
) -> DriftResult | None:
    state = _state(session, name, "labelled_samples", now)
    count = session.exec(
        select(func.count())
        .select_from(Sample)
        .where(Sample.model_name == name, col(Sample.labelled).is_(True))
        .where(col(Sample.labelled_at) > state.since)
    ).one()
    state.value, state.threshold, state.samples = float(count), float(config.every), int(count)
    state.evaluated_at = now
    state.detail = (
        f"{count} samples labelled since {state.since.isoformat()} (fires at {config.every})"
    )
    fired = None
    if count >= config.every:
        fired = DriftResult("labelled_samples", "drift", float(count), float(config.every),
                            int(count), 0, state.detail)  # fmt: skip
        state.since = now
    session.add(state)
    return fired


def _schedule(
    session: Session, now: datetime, name: str, config: ScheduleTrigger
) -> DriftResult | None:
    state = _state(session, name, "schedule", now)
    due = state.since + timedelta(seconds=config.every_s)
    state.threshold, state.evaluated_at = config.every_s, now
    fired = None
    if now >= due:
        elapsed = (now - state.since).total_seconds()
        detail = f"scheduled every {config.every_s:.0f} s; last at {state.since.isoformat()}"
        fired = DriftResult("schedule", "drift", elapsed, config.every_s, 0, 0, detail)
        state.since = now
    state.detail = f"next at {(state.since + timedelta(seconds=config.every_s)).isoformat()}"
    session.add(state)
    return fired
