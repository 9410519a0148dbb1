"""Retraining triggers beyond drift on SQLite and PostgreSQL, through a real command backend:
an accuracy drop on labelled samples, a count of new labels reached, a schedule — each per model,
each alert saying what fired and why (and the retraining payload carrying it)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, select

from fleet_server.models import DriftAlert, DriftStatus
from fleet_server.models.samples import Sample
from fleet_server.services.drift import DriftConfig, DriftJob, backend_for
from fleet_server.services.drift.retrain import CommandRetrainConfig
from tests.fleet_server.helpers import migrated_engine

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    with migrated_engine(database_url, ("cam",), T0) as engine:
        yield engine


def _job(engine: Engine, tmp_path: Path, triggers: dict[str, Any]) -> DriftJob:
    out = tmp_path / "triggers.jsonl"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read().strip() + '\\n')"
    config = DriftConfig.model_validate({"settle_s": 0, "triggers": triggers})
    backend = backend_for(CommandRetrainConfig(type="command", argv=[sys.executable, "-c", script]))
    return DriftJob(engine=engine, config=config, retrain=backend, cooldown_s=0)


def _sent(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "triggers.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Labels:
    def __init__(self, engine: Engine) -> None:
        self.engine, self.n = engine, 0

    def add(self, *, captured: datetime, labelled: datetime, correct: int, wrong: int,
            model: str = "pets") -> None:  # fmt: skip
        with Session(self.engine) as session:
            for i in range(correct + wrong):
                self.n += 1
                session.add(
                    Sample(
                        sample_id=f"s-{self.n:06d}",
                        device_id="cam",
                        model_name=model,
                        model_version="1.0.0",
                        reason="random",
                        captured_at=captured,
                        predicted="cat" if i < correct else "dog",
                        content_type="image/jpeg",
                        sha256=f"{self.n:064x}",
                        size=1,
                        labelled=True,
                        label="cat",
                        labelled_at=labelled,
                    )  # fmt: skip
                )
            session.commit()


def _alerts(engine: Engine) -> list[DriftAlert]:
    with Session(engine) as session:
        return list(session.exec(select(DriftAlert).order_by(DriftAlert.id)))  # type: ignore[arg-type]


def test_accuracy_drop_opens_an_alert_with_why_and_triggers(engine: Engine, tmp_path: Path) -> None:
    labels = Labels(engine)
    job = _job(engine, tmp_path, {"pets": {"accuracy_drop": {"window_s": 86_400,
                                                             "min_samples": 40}}})  # fmt: skip
    now = T0 + timedelta(days=10)
    labels.add(captured=now - timedelta(days=5), labelled=now, correct=54, wrong=6)  # 0.90
    labels.add(captured=now - timedelta(hours=2), labelled=now, correct=20, wrong=10)  # too few
    assert job.run_once(now=now).opened == []
    with Session(engine) as session:
        status = session.get(DriftStatus, ("pets", "1.0.0", "label_accuracy_drop"))
        assert status is not None and status.status == "insufficient"
    labels.add(captured=now - timedelta(hours=1), labelled=now, correct=16, wrong=14)  # 36/60
    run = job.run_once(now=now + timedelta(minutes=1))
    assert len(run.opened) == 1 and list(run.triggered.values()) == ["sent"]
    alert = _alerts(engine)[0]
    assert alert.detector == "label_accuracy_drop" and alert.closed_at is None
    assert alert.value == pytest.approx(0.9 - 0.6)
    assert "0.9000 (54/60) → 0.6000 (36/60)" in alert.detail
    sent = _sent(tmp_path)
    assert len(sent) == 1 and sent[0]["detector"] == "label_accuracy_drop"
    assert sent[0]["detail"] == alert.detail


def test_labelled_count_fires_per_every_new_labels(engine: Engine, tmp_path: Path) -> None:
    labels = Labels(engine)
    labels.add(captured=T0, labelled=T0 - timedelta(days=1), correct=100, wrong=0)  # before
    job = _job(engine, tmp_path, {"pets": {"labelled_count": {"every": 20}}})
    assert job.run_once(now=T0).opened == []  # the count starts now
    labels.add(captured=T0, labelled=T0 + timedelta(minutes=1), correct=10, wrong=5)
    assert job.run_once(now=T0 + timedelta(minutes=2)).opened == []
    labels.add(captured=T0, labelled=T0 + timedelta(minutes=3), correct=10, wrong=0)
    fired = job.run_once(now=T0 + timedelta(minutes=4))
    assert len(fired.opened) == 1
    alert = _alerts(engine)[0]
    assert (alert.detector, alert.model_version, alert.value) == ("labelled_samples", "*", 25.0)
    assert alert.closed_at is not None and "25 samples labelled since" in alert.detail
    assert job.run_once(now=T0 + timedelta(minutes=5)).opened == []  # counted afresh
    labels.add(
        captured=T0, labelled=T0 + timedelta(minutes=6), correct=5, wrong=0, model="other"
    )  # fmt: skip  another model's labels do not count
    assert job.run_once(now=T0 + timedelta(minutes=7)).opened == []
    assert [s["detector"] for s in _sent(tmp_path)] == ["labelled_samples"]


def test_schedule_fires_every_period_and_not_at_start(engine: Engine, tmp_path: Path) -> None:
    job = _job(engine, tmp_path, {"pets": {"schedule": {"every_s": 3600}}})
    fired_at = []
    for minutes in (0, 30, 59, 61, 62, 120, 122):
        if job.run_once(now=T0 + timedelta(minutes=minutes)).opened:
            fired_at.append(minutes)
    assert fired_at == [61, 122]
    alerts = _alerts(engine)
    assert [a.detector for a in alerts] == ["schedule", "schedule"]
    assert "scheduled every 3600 s" in alerts[0].detail
    assert len(_sent(tmp_path)) == 2


def test_trigger_configs_refuse_nonsense() -> None:
    for bad in ({"pets": {"schedule": {"every_s": 1}}}, {"pets": {"labelled_count": {}}},
                {"pets": {"accuracy_drop": {"max_drop": 2}}}, {"pets": {"nope": {}}}):  # fmt: skip
        with pytest.raises(ValidationError):
            DriftConfig.model_validate({"triggers": bad})
