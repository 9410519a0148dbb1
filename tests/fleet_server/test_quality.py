"""Quality per version: the metrics against scikit-learn (an independent implementation) and a
hand-computed mAP; the report from labelled samples in SQLite / PostgreSQL, split into random
and all, and per device class."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sqlalchemy import Engine, update
from sqlmodel import Session, SQLModel

from fleet_server.models import ModelVersion
from fleet_server.models.samples import Sample
from fleet_server.services.quality.metrics import (
    Box,
    classifier_quality,
    detector_quality,
    wilson,
)
from fleet_server.services.quality.service import QualityError, label_counts, version_quality
from tests.fleet_server.helpers import migrated_engine

T0 = datetime(2026, 12, 1, tzinfo=UTC)
LABELS = ["cat", "dog", "fox"]


def _random_pairs(seed: int, n: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    truth = rng.choice(LABELS, n, p=[0.5, 0.3, 0.2])
    wrong = rng.random(n) < 0.3
    predicted = np.where(wrong, rng.choice([*LABELS, "owl"], n), truth)
    return list(zip(truth.tolist(), predicted.tolist(), strict=True))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_classifier_metrics_match_sklearn(seed: int) -> None:
    pairs = _random_pairs(seed, 400)
    ours = classifier_quality(pairs)
    y_true, y_pred = [t for t, _ in pairs], [p for _, p in pairs]
    assert ours.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ours.classes, zero_division=0
    )
    for i, c in enumerate(ours.classes):
        assert ours.per_class[c].precision == pytest.approx(precision[i])
        assert ours.per_class[c].recall == pytest.approx(recall[i])
        assert ours.per_class[c].f1 == pytest.approx(f1[i])
        assert ours.per_class[c].support == support[i]
    expected = confusion_matrix(y_true, y_pred, labels=ours.classes)
    assert ours.confusion == expected.tolist()


def test_wilson_interval_matches_scipy() -> None:
    from scipy.stats import binomtest

    for k, n in ((81, 100), (0, 10), (10, 10), (3, 7), (480, 500)):
        expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        low, high = wilson(k, n)
        assert low == pytest.approx(expected.low, abs=1e-9)
        assert high == pytest.approx(expected.high, abs=1e-9)
    assert wilson(0, 0) == (0.0, 1.0)


def test_map50_by_hand() -> None:
    # Image 1: two cats labelled; predictions: a hit (0.9), a miss (0.8), a hit (0.7).
    # Image 2: one dog labelled; prediction: a hit (0.6) and a duplicate of it (0.5, fp).
    truth1 = [Box("cat", 0, 0, 10, 10), Box("cat", 20, 20, 30, 30)]
    pred1 = [Box("cat", 0, 0, 10, 9, 0.9), Box("cat", 50, 50, 60, 60, 0.8),
             Box("cat", 21, 21, 30, 30, 0.7)]  # fmt: skip
    truth2 = [Box("dog", 0, 0, 10, 10)]
    pred2 = [Box("dog", 0, 0, 10, 10, 0.6), Box("dog", 0, 0, 10, 10, 0.5)]
    result = detector_quality([(truth1, pred1), (truth2, pred2)])
    # cat: P/R after each: (1, .5), (.5, .5), (.667, 1) → AP = .5*1 + .5*.667 = .8333
    assert result.per_class_ap["cat"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert result.per_class_ap["dog"] == pytest.approx(1.0)
    assert result.map50 == pytest.approx((0.5 + 0.5 * 2 / 3 + 1.0) / 2)
    assert result.boxes == 3 and result.images == 2


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    with migrated_engine(database_url, ("cam-a", "cam-b"), T0) as engine:
        with engine.begin() as conn:
            device = SQLModel.metadata.tables["device"]
            conn.execute(update(device).where(device.c.device_id == "cam-a").values(
                device_class="rpi4"))  # fmt: skip
        yield engine


def _version(session: Session, version: str) -> None:
    session.add(
        ModelVersion(
            name="pets",
            version=version,
            format="onnx",
            precision="fp32",
            task="classification",
            sha256="0" * 64,
            size=1,
            signed=False,
            storage_key=f"pets/{version}",
            manifest={"labels": LABELS},
        )  # fmt: skip
    )


@pytest.mark.integration
def test_version_quality_from_labelled_samples_matches_sklearn(engine: Engine) -> None:
    pairs = _random_pairs(7, 300)
    with Session(engine) as session:
        _version(session, "1.0.0")
        for i, (truth, predicted) in enumerate(pairs):
            index = str(LABELS.index(predicted)) if predicted in LABELS else predicted
            session.add(
                Sample(
                    sample_id=f"s-{i:06d}",
                    device_id="cam-a" if i % 3 else "cam-b",
                    model_name="pets",
                    model_version="1.0.0",
                    reason="random" if i % 2 else "low_confidence",
                    captured_at=T0,
                    predicted=index,
                    content_type="image/jpeg",
                    sha256=f"{i:064x}",
                    size=1,
                    labelled=i % 10 != 0,
                    label=truth if i % 10 != 0 else None,
                )  # fmt: skip
            )
        session.commit()
        report = version_quality(session, "pets", "1.0.0")
        with pytest.raises(QualityError):
            version_quality(session, "pets", "9.9.9")
        counts = label_counts(session, "pets", ["1.0.0"])
    labelled = [(i, t, p) for i, (t, p) in enumerate(pairs) if i % 10 != 0]
    for subset, keep in (("random", lambda i: i % 2 == 1), ("all", lambda i: True)):
        chosen = [(t, p) for i, t, p in labelled if keep(i)]
        overall = report["subsets"][subset]["overall"]
        expected = accuracy_score([t for t, _ in chosen], [p for _, p in chosen])
        assert overall["samples"] == len(chosen)
        assert overall["accuracy"] == pytest.approx(expected)
        assert overall["accuracy_ci"]["low"] < expected < overall["accuracy_ci"]["high"]
        rpi = [(t, p) for i, t, p in labelled if keep(i) and i % 3]
        by_class = report["subsets"][subset]["by_device_class"]
        assert by_class["rpi4"]["accuracy"] == pytest.approx(
            accuracy_score([t for t, _ in rpi], [p for _, p in rpi])
        )
        assert by_class["unknown"]["samples"] == len(chosen) - len(rpi)
    assert counts.labelled == len(labelled)
    assert counts.correct == sum(t == p for _, t, p in labelled)


@pytest.mark.integration
def test_quality_over_http_cli_and_metrics(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleet_server.client.api import FleetClient
    from tests.fleet_server.client.conftest import run_fleet
    from tests.utils.server import live_server

    pairs = _random_pairs(11, 120)
    with live_server(tmp_path, database_url=database_url) as server:
        engine = server.runtime.engine
        assert engine is not None
        with Session(engine) as session:
            _version(session, "1.0.0")
            for i, (truth, predicted) in enumerate(pairs):
                session.add(
                    Sample(
                        sample_id=f"h-{i:06d}",
                        device_id="cam",
                        model_name="pets",
                        model_version="1.0.0",
                        reason="random" if i % 4 else "margin",
                        captured_at=T0,
                        predicted=predicted,
                        content_type="image/jpeg",
                        sha256=f"{i:064x}",
                        size=1,
                        labelled=True,
                        label=truth,
                    )  # fmt: skip
                )
            session.commit()
        client = FleetClient(server.url, server.token)
        try:
            report = client.quality("pets", "1.0.0")
        finally:
            client.close()
        random_pairs = [p for i, p in enumerate(pairs) if i % 4]
        expected_random = accuracy_score([t for t, _ in random_pairs], [p for _, p in random_pairs])
        expected_all = accuracy_score([t for t, _ in pairs], [p for _, p in pairs])
        assert report["subsets"]["random"]["overall"]["accuracy"] == pytest.approx(expected_random)
        assert report["subsets"]["all"]["overall"]["samples"] == 120
        argv = ["fleet", "--server", server.url, "--token", server.token]
        capsys.readouterr()
        assert run_fleet([*argv, "quality", "pets", "1.0.0", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == report
        assert run_fleet([*argv, "quality", "pets", "1.0.0"]) == 0
        table = capsys.readouterr().out
        assert f"{100 * expected_random:.1f} %" in table and "random" in table
        assert run_fleet([*argv, "quality", "pets", "9.9.9"]) != 0
        assert "does not exist" in capsys.readouterr().err
        metrics = httpx.get(f"{server.url}/metrics").text
        line = f'edgefleet_label_accuracy{{model="pets@1.0.0",subset="all"}} {expected_all}'
        assert line in metrics
        assert 'edgefleet_labelled_samples{model="pets@1.0.0",subset="random"} 90.0' in metrics
