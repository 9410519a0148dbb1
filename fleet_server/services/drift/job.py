"""The drift job (leader only): sum new telemetry into buckets, judge every active model version
with every detector, open and close alerts, and call the retraining backend for new ones.

Per run, in one transaction: the telemetry rows received since the cursor (minus ``settle_s``)
are added to ``drift_bucket`` and the cursor moves — a crash rolls both back, so nothing is
counted twice or lost. The first run reaches back ``max(window_s, reference_s)``: a version's
reference is the first ``reference_s`` of telemetry the job has summed for it. A status change
ok/insufficient → drift opens an alert; drift → ok closes it (no data is not a recovery).
Retraining is called after the commit, outside any transaction, for alerts still ``pending`` (at
least once: an alert left pending by a crash is retried by the next run); at most once per model
name per ``cooldown_s`` — alerts inside the cooldown are marked ``cooldown``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from fleet_server.models import DriftAlert, DriftBucket, DriftCursor, DriftStatus, TelemetryRow
from fleet_server.models.types import utcnow
from fleet_server.services.drift.detectors import (
    Aggregate,
    DriftConfig,
    DriftResult,
    detectors_for,
)
from fleet_server.services.drift.inputs import (
    first_bucket,
    manifest_reference,
    summarise_inputs,
    summed,
)
from fleet_server.services.drift.inputs import segments as input_segments
from fleet_server.services.drift.retrain import RetrainBackend, RetrainError
from fleet_server.services.drift.triggers import ALL_VERSIONS, judge_triggers

log = logging.getLogger(__name__)

CURSOR = "telemetry"
#: Detectors judged on the inputs (per segment, against the manifest): their names start so.
INPUT_PREFIX = "input_"


@dataclass
class DriftRun:
    """What one run did (for logs and tests)."""

    rows: int = 0
    versions: int = 0
    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    triggered: dict[int, str] = field(default_factory=dict)


def bucket_of(ts: datetime, bucket_s: int) -> datetime:
    epoch = ts.timestamp()
    return datetime.fromtimestamp(epoch - epoch % bucket_s, tz=ts.tzinfo)


class DriftJob:
    name = "drift"

    def __init__(
        self,
        *,
        engine: Engine,
        config: DriftConfig,
        retrain: RetrainBackend | None = None,
        cooldown_s: float = 86_400.0,
    ) -> None:
        self.engine = engine
        self.config = config
        self.interval_s = config.interval_s
        self.retrain = retrain
        self.cooldown = timedelta(seconds=cooldown_s)
        self.detectors = detectors_for(config)

    def run(self, *, epoch: int) -> None:
        result = self.run_once()
        if result.opened or result.closed:
            log.warning(
                "drift alerts changed",
                extra={"opened": result.opened, "closed": result.closed, "epoch": epoch},
            )

    def run_once(self, now: datetime | None = None) -> DriftRun:
        now = now or utcnow()
        run = DriftRun()
        with Session(self.engine) as session:
            run.rows = self._summarise(session, now)
            # The buckets are their own transaction, and the detectors only read: on SQLite a
            # write lock held while they compute (null thresholds take seconds) kept ingest,
            # uploads, labels and the audit log waiting — a label request timed out at 30 s.
            session.commit()
            for name, version, result in self._judge(session, now, run):
                self._record(session, now, name, version, result, run)
            for event in judge_triggers(
                session,
                now,
                self.config.triggers,
                lambda name, version, result: self._record(
                    session, now, name, version, result, run
                ),
            ):
                self._open(session, now, event.model, ALL_VERSIONS, event.result, run, now)
            session.commit()
        self._trigger_pending(now, run)
        return run

    # -- telemetry → buckets -------------------------------------------------------------------
    def _summarise(self, session: Session, now: datetime) -> int:
        until = now - timedelta(seconds=self.config.settle_s)
        cursor = session.get(DriftCursor, CURSOR)
        history = max(self.config.window_s, self.config.reference_s)
        start = cursor.position if cursor else until - timedelta(seconds=history)
        if until <= start:
            return 0
        rows = session.execute(
            sa_select(
                col(TelemetryRow.model),
                col(TelemetryRow.received_at),
                col(TelemetryRow.inference_count),
                col(TelemetryRow.error_count),
                col(TelemetryRow.confidence_histogram),
                col(TelemetryRow.device_id),
                col(TelemetryRow.inputs),
                col(TelemetryRow.class_counts),
            )
            .where(col(TelemetryRow.received_at) > start, col(TelemetryRow.received_at) <= until)
            .order_by(col(TelemetryRow.received_at))
        ).all()
        sums: dict[tuple[str, str, datetime], Aggregate] = defaultdict(Aggregate)
        for model, received_at, inferences, errors, histogram, *_ in rows:
            if not isinstance(model, dict) or "name" not in model or "version" not in model:
                continue  # served no model in that interval
            key = (model["name"], model["version"], bucket_of(received_at, self.config.bucket_s))
            sums[key].add(list(histogram or []), int(inferences), int(errors), 1)
        for (name, version, bucket_start), add in sums.items():
            row = session.get(DriftBucket, (name, version, bucket_start))
            if row is None:
                row = DriftBucket(model_name=name, model_version=version, bucket_start=bucket_start)
            total = Aggregate(
                list(row.confidence_histogram), row.inferences, row.errors, row.intervals
            )
            total.add(add.histogram, add.inferences, add.errors, add.intervals)
            row.confidence_histogram = total.histogram
            row.inferences, row.errors, row.intervals = (
                total.inferences,
                total.errors,
                total.intervals,
            )
            session.add(row)
        summarise_inputs(
            session,
            [(r[5], r[0], r[1], r[6], r[7]) for r in rows],
            lambda ts: bucket_of(ts, self.config.bucket_s),
            segments=self.config.segments,
        )
        if cursor is None:
            cursor = DriftCursor(name=CURSOR, position=until)
        cursor.position = until
        session.add(cursor)
        return len(rows)

    # -- buckets → verdicts and alerts ---------------------------------------------------------
    def _judge(
        self, session: Session, now: datetime, run: DriftRun
    ) -> list[tuple[str, str, DriftResult]]:
        """Every detector's verdict per active version (reads only; the caller records them)."""
        verdicts: list[tuple[str, str, DriftResult]] = []
        window_start = now - timedelta(seconds=self.config.window_s)
        active = session.exec(
            select(DriftBucket.model_name, DriftBucket.model_version)
            .where(col(DriftBucket.bucket_start) >= window_start)
            .distinct()
        ).all()
        run.versions = len(active)
        for name, version in active:
            first = session.exec(
                select(func.min(DriftBucket.bucket_start)).where(
                    DriftBucket.model_name == name, DriftBucket.model_version == version
                )
            ).one()
            assert first is not None  # the version has a bucket in the window
            reference_end = first + timedelta(seconds=self.config.reference_s)
            # Two bounded reads: the reference period and the window after it, not the history.
            reference = self._sum(session, name, version, first, reference_end)
            window = self._sum(session, name, version, max(window_start, reference_end), None)
            forming = f"reference still forming until {reference_end.isoformat()}"
            for detector in self.detectors:
                if detector.name.startswith(INPUT_PREFIX):
                    continue
                result = detector.evaluate(window, reference)
                if now < reference_end:
                    result = replace(result, status="insufficient", value=None, detail=forming)
                verdicts.append((name, version, result))
            verdicts.extend(self._judge_inputs(session, now, name, version, window_start))
        return verdicts

    def _judge_inputs(
        self,
        session: Session,
        now: datetime,
        name: str,
        version: str,
        window_start: datetime,
    ) -> list[tuple[str, str, DriftResult]]:
        """The ``input_*`` detectors per segment: the window is the last ``window_s`` (the
        manifest's reference exists from the first minute); the class shift without a manifest
        distribution compares with the segment's own first ``reference_s``, and waits for it."""
        detectors = [d for d in self.detectors if d.name.startswith(INPUT_PREFIX)]
        verdicts: list[tuple[str, str, DriftResult]] = []
        if not detectors:
            return verdicts
        manifest, labels = manifest_reference(session, name, version)
        for segment in input_segments(session, name, version, window_start):
            window = summed(session, name, version, segment, window_start, None, labels)
            reference, forming = manifest, ""
            if manifest.class_source != "manifest":
                first = first_bucket(session, name, version, segment)
                assert first is not None  # the segment has a bucket in the window
                reference_end = first + timedelta(seconds=self.config.reference_s)
                fleet = summed(session, name, version, segment, first, reference_end, labels)
                reference = replace(manifest, class_counts=fleet.class_counts)
                if now < reference_end:
                    forming = f"reference still forming until {reference_end.isoformat()}"
                else:
                    window_from = max(window_start, reference_end)
                    later = summed(session, name, version, segment, window_from, None, labels)
                    window = replace(window, class_counts=later.class_counts)
            for detector in detectors:
                result = detector.evaluate(window, reference)
                if forming and detector.name == "input_class_shift":
                    result = replace(result, status="insufficient", value=None, detail=forming)
                if segment:
                    result = replace(result, detector=f"{result.detector}[{segment}]")
                verdicts.append((name, version, result))
        return verdicts

    @staticmethod
    def _sum(
        session: Session, name: str, version: str, start: datetime, end: datetime | None
    ) -> Aggregate:
        """The buckets of one version from ``start`` up to (not including) ``end``, summed."""
        query = select(DriftBucket).where(
            DriftBucket.model_name == name,
            DriftBucket.model_version == version,
            col(DriftBucket.bucket_start) >= start,
        )
        if end is not None:
            query = query.where(col(DriftBucket.bucket_start) < end)
        total = Aggregate()
        for b in session.exec(query):
            total.add(b.confidence_histogram, b.inferences, b.errors, b.intervals)
        return total

    def _record(
        self,
        session: Session,
        now: datetime,
        name: str,
        version: str,
        result: DriftResult,
        run: DriftRun,
    ) -> None:
        status = session.get(DriftStatus, (name, version, result.detector))
        previous = status.status if status is not None else None
        if status is None:
            status = DriftStatus(
                model_name=name, model_version=version, detector=result.detector, since=now
            )  # type: ignore[call-arg]  # the rest is set just below
        elif status.status != result.status:
            status.since = now
        status.status, status.value, status.threshold = (
            result.status,
            result.value,
            result.threshold,
        )
        status.samples, status.reference_samples = result.samples, result.reference_samples
        status.evaluated_at, status.detail = now, result.detail[:500]
        session.add(status)
        open_alert = session.exec(
            select(DriftAlert).where(
                DriftAlert.model_name == name,
                DriftAlert.model_version == version,
                DriftAlert.detector == result.detector,
                col(DriftAlert.closed_at).is_(None),
            )
        ).first()
        if result.status == "drift" and previous != "drift" and open_alert is None:
            self._open(session, now, name, version, result, run, None)
        elif result.status == "ok" and open_alert is not None:
            open_alert.closed_at = now
            session.add(open_alert)
            assert open_alert.id is not None
            run.closed.append(open_alert.id)

    def _open(
        self,
        session: Session,
        now: datetime,
        name: str,
        version: str,
        result: DriftResult,
        run: DriftRun,
        closed_at: datetime | None,
    ) -> None:
        """Open an alert (``closed_at`` set: an event, closed at once) that retraining picks up."""
        alert = DriftAlert(
            model_name=name,
            model_version=version,
            detector=result.detector,
            value=result.value,
            threshold=result.threshold,
            samples=result.samples,
            detail=result.detail[:500],
            opened_at=now,
            closed_at=closed_at,
            trigger_status="pending" if self.retrain is not None else "none",
        )
        session.add(alert)
        session.flush()
        assert alert.id is not None
        run.opened.append(alert.id)
        log.warning(
            "drift detected" if closed_at is None else "retraining trigger fired",
            extra={"model": f"{name}@{version}", "detector": result.detector,
                   "value": result.value, "threshold": result.threshold},
        )  # fmt: skip

    # -- alerts → retraining -------------------------------------------------------------------
    def _trigger_pending(self, now: datetime, run: DriftRun) -> None:
        if self.retrain is None:
            return
        with Session(self.engine) as session:
            pending = session.exec(
                select(DriftAlert)
                .where(DriftAlert.trigger_status == "pending")
                .order_by(col(DriftAlert.id))
            ).all()
            for alert in pending:
                last = session.exec(
                    select(DriftAlert.triggered_at)
                    .where(DriftAlert.model_name == alert.model_name)
                    .where(DriftAlert.trigger_status == "sent")
                    .order_by(col(DriftAlert.triggered_at).desc())
                ).first()
                if last is not None and now - last < self.cooldown:
                    alert.trigger_status = "cooldown"
                    alert.trigger_detail = (
                        f"retraining for {alert.model_name} was triggered at {last.isoformat()}"
                    )
                else:
                    try:
                        alert.trigger_detail = self.retrain.trigger(self.payload(alert))[:1000]
                        alert.trigger_status = "sent"
                    except RetrainError as err:
                        alert.trigger_status, alert.trigger_detail = "failed", str(err)[:1000]
                        log.error("retraining trigger failed", extra={"error": str(err)})
                    alert.triggered_at = now
                assert alert.id is not None
                run.triggered[alert.id] = alert.trigger_status
                session.add(alert)
                session.commit()  # one by one: a later failure does not undo an earlier send

    def payload(self, alert: DriftAlert) -> dict[str, Any]:
        return {
            "kind": "edgefleet.drift",
            "alert_id": alert.id,
            "model": alert.model_name,
            "version": alert.model_version,
            "detector": alert.detector,
            "value": alert.value,
            "threshold": alert.threshold,
            "samples": alert.samples,
            "detail": alert.detail,
            "opened_at": alert.opened_at.isoformat(),
            "window_s": self.config.window_s,
            "reference_s": self.config.reference_s,
        }


def drift_report(
    session: Session, *, limit: int = 100
) -> tuple[list[DriftStatus], list[DriftAlert]]:
    statuses = session.exec(
        select(DriftStatus).order_by(
            col(DriftStatus.model_name), col(DriftStatus.model_version), col(DriftStatus.detector)
        )
    ).all()
    alerts = session.exec(select(DriftAlert).order_by(col(DriftAlert.id).desc()).limit(limit)).all()
    return list(statuses), list(alerts)
