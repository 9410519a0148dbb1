"""The rollout gate ``label_accuracy`` in the real engine on SQLite and PostgreSQL: with labels,
a new version that is less accurate than the old on labelled samples fails its canary; too few
labels make the stage wait; no labels at all leave it skipped (the other gates decide)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import Session

from fleet_server.models.samples import Sample
from fleet_server.services.rollouts import service
from tests.fleet_server.rollout_harness import NEW, OLD, Harness

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _labels(h: Harness, version: str, *, correct: int, wrong: int) -> None:
    with Session(h.db) as session:
        for i in range(correct + wrong):
            session.add(
                Sample(
                    sample_id=f"{version}-{i:05d}",
                    device_id="cam",
                    model_name="digits",
                    model_version=version,
                    reason="random",
                    captured_at=T0,
                    predicted="7" if i < correct else "1",
                    content_type="image/jpeg",
                    sha256=f"{i:064x}",
                    size=1,
                    labelled=True,
                    label="7",
                )  # fmt: skip
            )
        session.commit()


def _canary_reports(h: Harness, rollout_id: int) -> None:
    canary = h.members(rollout_id, "assigned")
    h.commit(canary)
    h.telemetry(canary, version=NEW, intervals=4)  # the first one is the update settling
    h.telemetry(h.members(rollout_id, "pending"), version=OLD)
    h.engine.tick()


def _gate(h: Harness, rollout_id: int, action: str) -> dict[str, object]:
    decision = h.decision(rollout_id, action)
    return next(g for g in decision.evidence["gates"] if g["name"] == "label_accuracy")


def test_a_less_accurate_version_fails_the_label_gate(h: Harness) -> None:
    h.add_devices(10)
    # 0.90 vs 0.70 on 200 labels each: significant at the early alpha (100 each is not)
    _labels(h, OLD, correct=180, wrong=20)
    _labels(h, NEW, correct=140, wrong=60)
    rollout = h.create()
    _canary_reports(h, rollout.id)
    failed = h.decision(rollout.id, "gate_failed")
    assert "label_accuracy" in failed.reason
    gate = _gate(h, rollout.id, "gate_failed")
    assert gate["status"] == "fail" and gate["value"] == pytest.approx(-0.2)
    assert gate["samples"] == 200
    with Session(h.db) as session:  # the rollout report says the same, random and all named
        report = service.report(session, rollout.id, now=h.clock.now)
    labels = report.differential["label_accuracy"]
    assert labels["new"]["random"]["accuracy"] == pytest.approx(0.7)
    assert labels["old"]["all"]["accuracy"] == pytest.approx(0.9)
    assert labels["old"]["versions"] == [OLD] and labels["new"]["all"]["labelled"] == 200
    low, high = labels["new"]["random"]["ci95"]
    assert low < 0.7 < high


def test_an_equally_accurate_version_passes_and_few_labels_wait(h: Harness) -> None:
    h.add_devices(10)
    _labels(h, OLD, correct=90, wrong=10)
    _labels(h, NEW, correct=9, wrong=1)  # 10 labels: fewer than min_samples (50)
    rollout = h.create(strategy={"soak_s": 0, "stage_timeout_s": 600})
    _canary_reports(h, rollout.id)
    assert h.rollout(rollout.id).stage == 0  # waiting for labels
    with Session(h.db) as session:  # 80 more labelled samples of the new version
        for i in range(80):
            session.add(
                Sample(
                    sample_id=f"more-{i:05d}",
                    device_id="cam",
                    model_name="digits",
                    model_version=NEW,
                    reason="random",
                    captured_at=T0,
                    predicted="7" if i < 73 else "1",
                    content_type="image/jpeg",
                    sha256=f"{i + 10_000:064x}",
                    size=1,
                    labelled=True,
                    label="7",
                )  # fmt: skip
            )
        session.commit()
    h.clock.advance(5)
    _canary_reports(h, rollout.id)
    gate = _gate(h, rollout.id, "stage_passed")
    assert gate["status"] == "pass"  # 82/90 = 0.911 vs 0.90
    assert h.rollout(rollout.id).stage == 1


def test_without_labels_the_gate_is_skipped(h: Harness) -> None:
    h.add_devices(10)
    rollout = h.create(strategy={"soak_s": 0})
    _canary_reports(h, rollout.id)
    assert _gate(h, rollout.id, "stage_passed")["status"] == "skipped"
