"""Drift detection on SQLite and PostgreSQL: telemetry summed into buckets exactly once across
runs, a reference from a version's first period, each detector's verdict (ok, drift,
insufficient), alerts opened and closed on transitions, retraining triggered once per alert with
a cooldown per model, through a real command and a real (signed) webhook; the API and /metrics."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, insert
from sqlmodel import Session, SQLModel, select

from fleet_server.models import DriftAlert, DriftBucket, DriftStatus
from fleet_server.services.drift import Aggregate, DriftConfig, DriftJob, backend_for
from fleet_server.services.drift.detectors import (
    ConfidenceDrop,
    ConfidenceDropConfig,
    ConfidenceShift,
    ConfidenceShiftConfig,
    ErrorRateRise,
    ErrorRateRiseConfig,
)
from fleet_server.services.drift.retrain import (
    CommandRetrainConfig,
    RetrainError,
    WebhookBackend,
    WebhookRetrainConfig,
)
from tests.fleet_server.helpers import migrated_engine
from tests.utils.webhook import Received, webhook_server

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
CONFIDENT = [0, 0, 0, 0, 0, 0, 0, 5, 15, 80]  # top-1 confidence mostly in the last bin
UNSURE = [0, 0, 5, 20, 30, 25, 10, 5, 3, 2]  # the same model on inputs it no longer knows
CONFIG = DriftConfig(window_s=3600, reference_s=6 * 3600, bucket_s=300, settle_s=0)


def test_detectors_judge_and_need_enough_samples() -> None:
    reference = Aggregate(list(CONFIDENT), inferences=1000, errors=10, intervals=10)
    same = Aggregate([n * 2 for n in CONFIDENT], inferences=2000, errors=20, intervals=20)
    shifted = Aggregate([n * 10 for n in UNSURE], inferences=1000, errors=100, intervals=10)
    few = Aggregate(list(UNSURE), inferences=100, errors=0, intervals=1)
    shift = ConfidenceShift(ConfidenceShiftConfig(min_samples=100))
    drop = ConfidenceDrop(ConfidenceDropConfig(min_samples=100))
    rise = ErrorRateRise(ErrorRateRiseConfig(min_samples=100))
    reference.histogram = [n * 10 for n in CONFIDENT]
    assert shift.evaluate(same, reference).status == "ok"
    assert shift.evaluate(same, reference).value == pytest.approx(0.0)
    moved = shift.evaluate(shifted, reference)
    assert moved.status == "drift" and moved.value is not None and moved.value > 0.8
    fell = drop.evaluate(shifted, reference)
    assert fell.status == "drift" and fell.value == pytest.approx(0.925 - 0.502, abs=1e-9)
    assert drop.evaluate(same, reference).status == "ok"
    errors = rise.evaluate(shifted, reference)  # 10/1010 → 100/1100
    assert errors.status == "drift" and errors.value == pytest.approx(100 / 1100 - 10 / 1010)
    assert rise.evaluate(same, reference).status == "ok"
    assert shift.evaluate(few, reference).status == "drift"  # 100 samples: exactly enough
    assert (
        ConfidenceShift(ConfidenceShiftConfig(min_samples=101)).evaluate(few, reference).status
        == "insufficient"
    )
    other_bins = Aggregate([1] * 500 * 4, inferences=2000)
    assert shift.evaluate(other_bins, reference).status == "insufficient"
    assert shift.evaluate(Aggregate(), Aggregate()).status == "insufficient"


def test_configs_refuse_nonsense() -> None:
    for bad in ({"window_s": 0}, {"bucket_s": 0}, {"confidence_shift": {"threshold": 2}},
                {"nope": 1}):  # fmt: skip
        with pytest.raises(ValidationError):
            DriftConfig.model_validate(bad)
    for bad_retrain in ({"type": "webhook", "url": "file:///etc/passwd"},
                        {"type": "command", "argv": []}, {"type": "ftp"}):  # fmt: skip
        with pytest.raises(ValidationError):
            from pydantic import TypeAdapter

            from fleet_server.services.drift import RetrainConfig

            TypeAdapter(RetrainConfig).validate_python(bad_retrain)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    with migrated_engine(database_url, ("dev-a", "dev-b"), T0) as engine:
        yield engine


class Fleet:
    """Writes telemetry rows the way ingest stores them: two devices, one row a minute each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seq = 0

    def serve(
        self,
        start: datetime,
        minutes: int,
        histogram: list[int],
        *,
        version: str = "1.0.0",
        errors: int = 0,
    ) -> None:
        rows = []
        for minute in range(minutes):
            for device in ("dev-a", "dev-b"):
                self.seq += 1
                at = start + timedelta(minutes=minute, seconds=30)
                rows.append(
                    {
                        "device_id": device,
                        "seq": self.seq,
                        "ts": at,
                        "received_at": at,
                        "interval_s": 60.0,
                        "model": {"name": "digits", "version": version},
                        "inference_count": sum(histogram),
                        "error_count": errors,
                        "errors": {},
                        "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": None},
                        "dropped": 0,
                        "system": {},
                        "confidence_histogram": histogram,
                    }
                )
        with self.engine.begin() as conn:
            conn.execute(insert(SQLModel.metadata.tables["telemetry"]), rows)


def _statuses(engine: Engine) -> dict[str, DriftStatus]:
    with Session(engine) as session:
        return {s.detector: s for s in session.exec(select(DriftStatus))}


def _alerts(engine: Engine) -> list[DriftAlert]:
    with Session(engine) as session:
        return list(session.exec(select(DriftAlert).order_by(DriftAlert.id)))  # type: ignore[arg-type]


def _command(tmp_path: Path, *, exit_code: int = 0) -> CommandRetrainConfig:
    """A real program: appends the JSON it got on stdin (and one env var) to a file."""
    out = tmp_path / "triggers.jsonl"
    script = (
        "import json, os, sys; d = json.load(sys.stdin); "
        "d['env_model'] = os.environ['EDGEFLEET_MODEL']; "
        f"open({str(out)!r}, 'a').write(json.dumps(d) + '\\n'); sys.exit({exit_code})"
    )
    return CommandRetrainConfig(type="command", argv=[sys.executable, "-c", script])


def _triggers(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "triggers.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.integration
def test_drift_opens_an_alert_triggers_retraining_once_and_closes(
    engine: Engine, tmp_path: Path
) -> None:
    fleet = Fleet(engine)
    job = DriftJob(
        engine=engine, config=CONFIG, retrain=backend_for(_command(tmp_path)), cooldown_s=86_400
    )
    # Six hours of a confident model: the reference forms; no verdict but insufficient.
    fleet.serve(T0, 6 * 60, CONFIDENT)
    first = job.run_once(now=T0 + timedelta(hours=3))
    assert first.rows > 0 and first.opened == []
    assert {s.status for s in _statuses(engine).values()} == {"insufficient"}
    assert "reference still forming" in _statuses(engine)["confidence_shift"].detail
    # The next hour looks the same: every detector ok.
    fleet.serve(T0 + timedelta(hours=6), 60, CONFIDENT)
    ok = job.run_once(now=T0 + timedelta(hours=7))
    assert ok.opened == [] and {s.status for s in _statuses(engine).values()} == {"ok"}
    # Then the inputs change: confidence collapses and errors rise.
    fleet.serve(T0 + timedelta(hours=7), 60, UNSURE, errors=30)
    drifted = job.run_once(now=T0 + timedelta(hours=8))
    statuses = _statuses(engine)
    assert {k: s.status for k, s in statuses.items()} == {
        "confidence_shift": "drift",
        "confidence_drop": "drift",
        "error_rate_rise": "drift",
    }
    shift = statuses["confidence_shift"]
    assert shift.value is not None and shift.value > 0.8
    assert statuses["confidence_shift"].samples == 2 * 60 * 100
    assert statuses["confidence_shift"].reference_samples == 2 * 6 * 60 * 100
    assert len(drifted.opened) == 3
    # One model, three alerts in one run: the first triggers, the other two are in its cooldown.
    assert sorted(drifted.triggered.values()) == ["cooldown", "cooldown", "sent"]
    sent = _triggers(tmp_path)
    assert len(sent) == 1 and sent[0]["model"] == "digits" and sent[0]["version"] == "1.0.0"
    assert sent[0]["env_model"] == "digits" and sent[0]["kind"] == "edgefleet.drift"
    # Still drifted an hour later: no new alert, no new trigger.
    fleet.serve(T0 + timedelta(hours=8), 60, UNSURE, errors=30)
    still = job.run_once(now=T0 + timedelta(hours=9))
    assert still.opened == [] and still.triggered == {} and len(_triggers(tmp_path)) == 1
    # Back to normal: alerts close.
    fleet.serve(T0 + timedelta(hours=9), 60, CONFIDENT)
    back = job.run_once(now=T0 + timedelta(hours=10))
    assert sorted(back.closed) == sorted(drifted.opened)
    assert all(a.closed_at is not None for a in _alerts(engine))
    # Drift again within the cooldown: a new alert, marked cooldown, nothing sent.
    fleet.serve(T0 + timedelta(hours=10), 60, UNSURE)
    again = job.run_once(now=T0 + timedelta(hours=11))
    assert again.opened and set(again.triggered.values()) == {"cooldown"}
    assert len(_triggers(tmp_path)) == 1


@pytest.mark.integration
def test_buckets_count_each_row_once_across_runs_and_restarts(engine: Engine) -> None:
    fleet = Fleet(engine)
    fleet.serve(T0, 90, CONFIDENT)
    job = DriftJob(engine=engine, config=CONFIG.model_copy(update={"window_s": 7200}))
    for minutes in (20, 21, 50, 95):  # runs at odd times, a fresh job each time (a restart)
        DriftJob(engine=engine, config=job.config).run_once(now=T0 + timedelta(minutes=minutes))
    with Session(engine) as session:
        buckets = list(session.exec(select(DriftBucket)))
    assert sum(b.intervals for b in buckets) == 2 * 90
    assert sum(b.inferences for b in buckets) == 2 * 90 * 100
    assert len(buckets) == 90 // 5
    assert all(sum(b.confidence_histogram) == b.inferences for b in buckets)


@pytest.mark.integration
def test_a_failing_backend_is_recorded_and_the_job_goes_on(engine: Engine, tmp_path: Path) -> None:
    fleet = Fleet(engine)
    failing = backend_for(_command(tmp_path, exit_code=3))
    job = DriftJob(engine=engine, config=CONFIG, retrain=failing)
    fleet.serve(T0, 6 * 60, CONFIDENT)
    job.run_once(now=T0 + timedelta(hours=6))  # the reference: the first 6 h
    fleet.serve(T0 + timedelta(hours=6), 60, UNSURE)
    run = job.run_once(now=T0 + timedelta(hours=7))
    assert run.opened and "failed" in run.triggered.values()
    failed = [a for a in _alerts(engine) if a.trigger_status == "failed"]
    assert failed and "exited 3" in failed[0].trigger_detail
    # A failed trigger is no cooldown: the next alert for the model tries again.
    assert "sent" not in run.triggered.values()


@pytest.fixture
def webhook() -> Iterator[tuple[str, Received]]:
    with webhook_server(lambda _h, body: 500 if b'"fail"' in body else 202) as server:
        yield server


def test_webhook_signs_the_exact_body(
    webhook: tuple[str, Received],
) -> None:
    url, received = webhook
    backend = WebhookBackend(
        WebhookRetrainConfig.model_validate({"type": "webhook", "url": url, "secret": "s3cret"})
    )
    assert backend.trigger({"model": "digits", "alert_id": 1}) == "HTTP 202"
    headers, body = received[-1]
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["x-edgefleet-signature"] == f"sha256={expected}"
    assert json.loads(body) == {"alert_id": 1, "model": "digits"}
    with pytest.raises(RetrainError, match="HTTP 500"):
        backend.trigger({"model": "fail"})
    closed = WebhookBackend(
        WebhookRetrainConfig(type="webhook", url="http://127.0.0.1:9/x", timeout_s=2)
    )
    with pytest.raises(RetrainError, match="webhook failed"):
        closed.trigger({"model": "digits"})


@pytest.mark.integration
def test_api_and_metrics_show_verdicts_and_alerts(app: Any) -> None:
    from tests.fleet_server.helpers import operator

    client, runtime = app
    assert runtime.engine is not None
    assert "drift" in runtime.leader._jobs  # registered on the driver by default
    now = datetime.now(UTC)
    with Session(runtime.engine) as session:
        session.add(
            DriftStatus(model_name="digits", model_version="1.0.0", detector="confidence_shift",
                        status="drift", value=0.83, threshold=0.25, samples=12000,
                        reference_samples=72000, since=now, evaluated_at=now,
                        detail="TV distance 0.830 over 10 bins")
        )  # fmt: skip
        session.add(
            DriftAlert(model_name="digits", model_version="1.0.0", detector="confidence_shift",
                       value=0.83, threshold=0.25, samples=12000, opened_at=now,
                       trigger_status="sent", trigger_detail="HTTP 202", triggered_at=now)
        )  # fmt: skip
        session.commit()
    report = client.get("/api/v1/drift", headers=operator())
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["statuses"][0]["status"] == "drift" and body["statuses"][0]["value"] == 0.83
    assert body["alerts"][0]["trigger_status"] == "sent"
    assert client.get("/api/v1/drift").status_code == 401
    assert client.get("/api/v1/drift?limit=0", headers=operator()).status_code == 422
    metrics = client.get("/metrics").text
    assert (
        'edgefleet_drift{detector="confidence_shift",model="digits@1.0.0",status="drift"} 1.0'
        in metrics
    )


@pytest.mark.integration
def test_the_detectors_compute_without_holding_the_write_lock(
    engine: Engine, tmp_path: Path
) -> None:
    """On SQLite one writer at a time: the drift job's buckets used to stay uncommitted while
    the detectors computed (seconds for input null thresholds), and ingest, uploads, labels and
    the audit log waited on the lock — a label request timed out at 30 s in the capture e2e.
    Here another writer with a 0.5 s lock timeout writes while a detector runs."""
    import sqlite3

    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL has row locks: a bucket write does not block other writers")
    assert engine.url.database is not None
    fleet = Fleet(engine)
    fleet.serve(T0, 6 * 60, CONFIDENT)
    job = DriftJob(engine=engine, config=CONFIG)
    wrote: list[str] = []
    real = job.detectors[0]

    class WritesMeanwhile:
        name = real.name

        def evaluate(self, window: Aggregate, reference: Aggregate) -> Any:
            other = sqlite3.connect(engine.url.database, timeout=0.5, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # the write lock, as any writer takes it
                other.execute("ROLLBACK")
                wrote.append("ok")
            except sqlite3.OperationalError as err:
                wrote.append(str(err))
            finally:
                other.close()
            return real.evaluate(window, reference)

    job.detectors[0] = WritesMeanwhile()  # type: ignore[call-overload]
    run = job.run_once(now=T0 + timedelta(hours=3))
    assert run.rows > 0 and wrote and set(wrote) == {"ok"}, wrote
