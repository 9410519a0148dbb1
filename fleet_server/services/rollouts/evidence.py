"""The numbers gates judge: telemetry of devices on the new version against a baseline on the old.

The baseline is preferably the **pre-update** telemetry of the updated devices themselves (each
device against its own history over the window before its update: the inputs a device sees do not
change with the update, while two devices can see very different images — issue #14); the
**control group** (targeted devices not yet updated, over the same recent window) is used when the
updated devices have too little history. With a pre-update baseline both sides are restricted to
the *paired* devices (those with telemetry before and after). Windows use the server's receive
time, so device clocks do not matter. Better still are the candidate's shadow reports against the
version it replaces, on the *same* inputs (:mod:`.shadow_pairs`): :attr:`Evidence.shadow`, which
the latency and confidence gates prefer where there is enough of it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy import true as sa_true
from sqlmodel import Session, SQLModel

from fleet_server.models.rollouts import RolloutDevice
from fleet_server.services.devices import DeviceFacts
from fleet_server.services.quality.service import LabelCounts, label_counts_by_device
from fleet_server.services.rollouts.shadow_pairs import ShadowPairs, read_pairs

Baseline = Literal["control", "pre-update", "none"]

#: At most this many of a device's newest telemetry intervals count (bounds the work per
#: evaluation at fleet scale; 120 one-minute intervals is two hours of a device's life).
MAX_INTERVALS_PER_DEVICE = 120

#: Pre-update intervals a device needs to be its own baseline (one interval has no spread).
MIN_HISTORY = 2


@dataclass
class Cohort:
    """Summed telemetry of some devices on one side (new or old version)."""

    devices: set[str] = field(default_factory=set)
    intervals: int = 0
    inferences: int = 0
    errors: int = 0
    p50_by_class: dict[str, list[float]] = field(default_factory=dict)
    p95_by_class: dict[str, list[float]] = field(default_factory=dict)
    #: The same p95s per device, and each device's class (paired and per-device comparisons).
    p95_by_device: dict[str, list[float]] = field(default_factory=dict)
    class_of: dict[str, str] = field(default_factory=dict)
    #: Each device's own confidence histogram (devices see different inputs: issue #14).
    hist_by_device: dict[str, list[int]] = field(default_factory=dict)
    histogram: list[int] = field(default_factory=list)
    #: Model versions seen in the rows (the old side may span several).
    versions: set[str] = field(default_factory=set)
    #: Labelled samples of those versions and how many the model got right.
    labels: LabelCounts = field(default_factory=LabelCounts)
    #: The same labels per capturing device (any device, not only this cohort's).
    labels_by_device: dict[str, LabelCounts] = field(default_factory=dict)

    def add(self, row: Any, device_class: str | None) -> None:
        self.devices.add(row.device_id)
        version = _version_of(row)
        if version is not None:
            self.versions.add(version[1])
        self.intervals += 1
        self.inferences += int(row.inference_count)
        self.errors += int(row.error_count)
        latency = row.latency_ms or {}
        key = device_class or "unknown"
        self.class_of[row.device_id] = key
        if latency.get("p95") is not None:
            self.p95_by_class.setdefault(key, []).append(float(latency["p95"]))
            self.p95_by_device.setdefault(row.device_id, []).append(float(latency["p95"]))
        if latency.get("p50") is not None:
            self.p50_by_class.setdefault(key, []).append(float(latency["p50"]))
        hist = list(row.confidence_histogram or [])
        if hist:
            if not self.histogram:
                self.histogram = [0] * len(hist)
            if len(hist) == len(self.histogram):
                self.histogram = [a + int(b) for a, b in zip(self.histogram, hist, strict=True)]
                own = self.hist_by_device.setdefault(row.device_id, [0] * len(hist))
                self.hist_by_device[row.device_id] = [
                    a + int(b) for a, b in zip(own, hist, strict=True)
                ]

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.inferences if self.inferences else None

    def devices_of(self, device_class: str) -> set[str]:
        """The devices of ``device_class`` that reported a p95."""
        return {d for d in self.p95_by_device if self.class_of.get(d) == device_class}

    def median_p95(self, device_class: str) -> float | None:
        values = self.p95_by_class.get(device_class)
        return statistics.median(values) if values else None

    def summary(self) -> dict[str, Any]:
        return {
            "devices": len(self.devices),
            "intervals": self.intervals,
            "inferences": self.inferences,
            "errors": self.errors,
            "error_rate": _round(self.error_rate),
            "latency_ms": {
                cls: {
                    "p50": _round(statistics.median(self.p50_by_class[cls]))
                    if self.p50_by_class.get(cls)
                    else None,
                    "p95": _round(statistics.median(values)),
                }
                for cls, values in sorted(self.p95_by_class.items())
            },
            "confidence_histogram": self.histogram,
            "labelled": self.labels.labelled,
            "label_accuracy": _round(self.labels.accuracy),
        }


@dataclass
class Evidence:
    """Everything the gates of one stage look at."""

    stage_devices: int
    committed: int
    failed: int
    unfinished: int
    #: Committed devices of every stage so far, and how many of them are offline now.
    committed_total: int
    committed_offline: int
    new: Cohort
    old: Cohort
    baseline: Baseline
    #: Devices compared with their own pre-update telemetry; devices on the new version left out
    #: of that comparison because they have no history in the window.
    paired: int = 0
    unpaired: int = 0
    #: Whether updated devices ran another version of the model before: an old-version
    #: baseline is then expected, and a gate without one waits for it (a canary judged before
    #: the ingest of its baseline must not pass a regression as "nothing to compare with") —
    #: unless an earlier stage of the rollout already passed that gate on a baseline
    #: (``judged``; the last stage has no control group, and late joiners no history).
    replaced: bool = field(default=False, init=False)
    judged: frozenset[str] = field(default=frozenset(), init=False)
    #: Shadow reports of the candidate beside the version it replaces (same inputs).
    shadow: ShadowPairs = field(default_factory=ShadowPairs, init=False)

    def awaits_baseline(self, gate: str) -> bool:
        """Whether ``gate``, finding no old-version figures, must wait for them (not skip)."""
        return self.replaced and gate not in self.judged

    def summary(self) -> dict[str, Any]:
        return {
            "stage_devices": self.stage_devices,
            "committed": self.committed,
            "failed": self.failed,
            "unfinished": self.unfinished,
            "committed_total": self.committed_total,
            "committed_offline": self.committed_offline,
            "baseline": self.baseline,
            "paired": self.paired,
            "unpaired": self.unpaired,
            "replaced": self.replaced,
            "new": self.new.summary(),
            "old": self.old.summary(),
            "shadow": self.shadow.summary(),
        }


def tv_distance(a: list[int], b: list[int]) -> float | None:
    """Total variation distance of two histograms with the same bins (None if not comparable)."""
    if not a or len(a) != len(b) or not sum(a) or not sum(b):
        return None
    ta, tb = sum(a), sum(b)
    return 0.5 * sum(abs(x / ta - y / tb) for x, y in zip(a, b, strict=True))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _telemetry_rows(
    session: Session, device_ids: Sequence[str], since: datetime, until: datetime | None = None
) -> list[Any]:
    if not device_ids:
        return []
    table = SQLModel.metadata.tables["telemetry"]
    rows: list[Any] = []
    ids = list(device_ids)
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        newest = (
            select(
                table.c.device_id,
                table.c.seq,
                table.c.received_at,
                table.c.model,
                table.c.inference_count,
                table.c.error_count,
                table.c.latency_ms,
                table.c.confidence_histogram,
                func.row_number()
                .over(partition_by=table.c.device_id, order_by=table.c.received_at.desc())
                .label("age"),
            )
            .where(
                table.c.device_id.in_(chunk),
                table.c.received_at >= since,
                table.c.received_at < until if until is not None else sa_true(),
            )
            .subquery()
        )
        query = select(*(c for c in newest.c if c.name != "age")).where(
            newest.c.age <= MAX_INTERVALS_PER_DEVICE
        )
        rows.extend(session.connection().execute(query).all())
    return rows


def _version_of(row: Any) -> tuple[str, str] | None:
    model = row.model
    if not isinstance(model, dict) or "name" not in model or "version" not in model:
        return None
    return str(model["name"]), str(model["version"])


def offline_devices(devices: Iterable[DeviceFacts], now: datetime, grace_s: float) -> set[str]:
    """Devices offline for at least ``grace_s`` (since the server received their offline status).

    A device that has never reported a status counts as offline at once.
    """
    since = now - timedelta(seconds=grace_s)
    return {
        d.device_id
        for d in devices
        if not d.online and (d.status_ts is None or d.status_ts <= since)
    }


def _counts(members: list[RolloutDevice], stage_ids: set[str], offline: set[str]) -> dict[str, int]:
    in_stage = [m for m in members if m.device_id in stage_ids]
    committed = [m for m in members if m.status == "committed"]
    return {
        "stage_devices": len(in_stage),
        "committed": sum(m.status == "committed" for m in in_stage),
        "failed": sum(m.status == "failed" for m in in_stage),
        "unfinished": sum(m.status in ("pending", "assigned") for m in in_stage),
        "committed_total": len(committed),
        "committed_offline": sum(m.device_id in offline for m in committed),
    }


def counts_only(
    *, members: Iterable[RolloutDevice], stage_ids: set[str], offline: set[str]
) -> Evidence:
    """Evidence from device statuses alone (no telemetry read): enough for the success gate."""
    counts = _counts(list(members), stage_ids, offline)
    return Evidence(**counts, new=Cohort(), old=Cohort(), baseline="none")


def assemble(
    *,
    members: Iterable[RolloutDevice],
    target: tuple[str, str],
    stage_ids: set[str],
    offline: set[str],
    window_s: float,
    min_control_intervals: int,
    settle_intervals: int,
    updated_rows: Iterable[Any],
    read_control: Callable[[], Iterable[Any]],
) -> Evidence:
    """Evidence from telemetry rows already read (no labels): ``updated_rows`` are the rows of
    every device the new version was sent to, from ``window_s`` before its update on;
    each device's first ``settle_intervals`` rows on the new version are left out; ``read_control``
    reads the control devices' recent rows, called only when the updated
    devices' own history is too thin. Pure, so that simulations judge exactly what the engine
    judges (``hil/gates.py``)."""
    members = list(members)
    assigned_at = {m.device_id: m.assigned_at for m in members if m.assigned_at is not None}
    classes = {m.device_id: m.device_class for m in members}
    # The new side: whatever the new version did on any device it was sent to (in probation,
    # committed, or since rolled back), from the moment it was assigned; the old side first
    # each such device's own history over the window before its update.
    new_rows: dict[str, list[Any]] = {}
    pre_rows: dict[str, list[Any]] = {}
    for row in updated_rows:
        at = assigned_at.get(row.device_id)
        version = _version_of(row)
        if at is None or version is None:
            continue
        if version == target and row.received_at >= at:
            new_rows.setdefault(row.device_id, []).append(row)
        elif version != target and at - timedelta(seconds=window_s) <= row.received_at < at:
            pre_rows.setdefault(row.device_id, []).append(row)

    for device_id, rows in list(new_rows.items()):  # the update settling is not judged
        rows.sort(key=lambda r: (r.received_at, r.seq))
        if len(rows) > settle_intervals:
            new_rows[device_id] = rows[settle_intervals:]
        else:
            del new_rows[device_id]
    # A device is compared with its own history when it has enough of it to show its spread.
    paired = sorted(d for d in set(new_rows) & set(pre_rows) if len(pre_rows[d]) >= MIN_HISTORY)
    new, old = Cohort(), Cohort()
    baseline: Baseline = "none"
    enough_history = sum(len(pre_rows[d]) for d in paired) >= min_control_intervals
    if enough_history and 2 * len(paired) >= len(new_rows):  # most updated devices have one
        baseline = "pre-update"
    else:
        for row in read_control():
            version = _version_of(row)
            if version is not None and version != target:
                old.add(row, classes.get(row.device_id))
        if old.intervals >= min_control_intervals:
            baseline = "control"
        elif paired:  # a little history beats none (e.g. the last stage, no control left)
            old, baseline = Cohort(), "pre-update"
        else:
            old = Cohort()
    if baseline == "pre-update":
        for device_id in paired:
            for row in pre_rows[device_id]:
                old.add(row, classes.get(device_id))
            for row in new_rows[device_id]:
                new.add(row, classes.get(device_id))
    else:
        for device_id, rows in new_rows.items():
            for row in rows:
                new.add(row, classes.get(device_id))
    evidence = Evidence(
        **_counts(members, stage_ids, offline),
        new=new,
        old=old,
        baseline=baseline,
        paired=len(paired) if baseline == "pre-update" else 0,
        unpaired=len(set(new_rows) - set(paired)) if baseline == "pre-update" else 0,
    )
    evidence.replaced = any(_replaced(m, target) for m in members if m.device_id in assigned_at)
    return evidence


def _replaced(member: RolloutDevice, target: tuple[str, str]) -> bool:
    """Whether ``member`` ran another version of the target's model before the rollout."""
    return (
        member.previous_name == target[0]
        and member.previous_version is not None
        and member.previous_version != target[1]
    )


def gather(
    *,
    session: Session,
    members: Iterable[RolloutDevice],
    target: tuple[str, str],
    stage_ids: set[str],
    offline: set[str],
    now: datetime,
    window_s: float,
    min_control_intervals: int,
    settle_intervals: int,
    shadow_since: datetime | None = None,
) -> Evidence:
    """Evidence for the stage made of ``stage_ids`` (and every committed device before it);
    with ``shadow_since``, the members' shadow reports of the candidate sent since then too."""
    members = list(members)
    window_start = now - timedelta(seconds=window_s)
    assigned_at = [m.assigned_at for m in members if m.assigned_at is not None]
    updated = [m.device_id for m in members if m.assigned_at is not None]
    control = [m.device_id for m in members if m.status == "pending"]
    earliest = min(assigned_at, default=now)
    # Two bounded reads of the updated devices: the newest rows (the new version), and the rows
    # before the last update (their history, which the newest rows may have pushed out).
    rows = _telemetry_rows(session, updated, min(earliest, window_start))
    history = _telemetry_rows(
        session,
        updated,
        earliest - timedelta(seconds=window_s),
        until=max(assigned_at, default=now),
    )
    seen = {(r.device_id, r.seq) for r in rows}
    rows += [r for r in history if (r.device_id, r.seq) not in seen]
    evidence = assemble(
        members=members,
        target=target,
        stage_ids=stage_ids,
        offline=offline,
        window_s=window_s,
        min_control_intervals=min_control_intervals,
        settle_intervals=settle_intervals,
        updated_rows=rows,
        read_control=lambda: _telemetry_rows(session, control, window_start),
    )
    if shadow_since is not None:
        evidence.shadow = read_pairs(
            session=session, members=members, target=target, since=shadow_since
        )
    new, old = evidence.new, evidence.old
    # Labels judge a version, not devices: every labelled sample of the new version, and of
    # the versions the baseline ran or the members ran before the rollout.
    previous = {m.previous_version for m in members if m.previous_name == target[0]}
    old_versions = (old.versions | {v for v in previous if v}) - {target[1]}
    for cohort, versions in ((new, [target[1]]), (old, sorted(old_versions))):
        cohort.labels_by_device = label_counts_by_device(session, target[0], versions)
        cohort.labels = LabelCounts(
            sum(c.labelled for c in cohort.labels_by_device.values()),
            sum(c.correct for c in cohort.labels_by_device.values()),
        )
    return evidence
