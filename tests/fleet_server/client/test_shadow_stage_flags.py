"""``rollouts create --shadow-s`` and its thresholds become the strategy's ``shadow`` block."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from fleet_server.client.api import FleetClientError
from fleet_server.client.cli import register
from fleet_server.client.render import Output
from fleet_server.client.rollouts import _spec, rollouts_report
from fleet_server.services.rollouts import RolloutCreate


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgefleet")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["fleet", "rollouts", "create", "digits", "1.1.0", *argv])


def test_flags_build_the_shadow_block(tmp_path: Path) -> None:
    assert "shadow" not in _spec(_args("--tag", "a"))["strategy"]
    body = _spec(
        _args("--tag", "a", "--shadow-s", "600", "--shadow-sample-rate", "0.5",
              "--shadow-min-agreement", "0.99", "--shadow-max-latency-ratio", "1.2")
    )  # fmt: skip
    assert body["strategy"]["shadow"] == {
        "shadow_s": 600.0,
        "sample_rate": 0.5,
        "min_agreement": 0.99,
        "max_latency_ratio": 1.2,
    }
    RolloutCreate.model_validate(body)  # what the server accepts
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"strategy": {"shadow": {"shadow_s": 30, "min_samples": 10}}}))
    merged = _spec(_args("--spec", str(spec), "--tag", "a", "--shadow-min-agreement", "0.9"))
    assert merged["strategy"]["shadow"] == {"shadow_s": 30, "min_samples": 10, "min_agreement": 0.9}


def test_thresholds_without_a_shadow_or_out_of_range_are_refused() -> None:
    with pytest.raises(FleetClientError, match="need --shadow-s"):
        _spec(_args("--tag", "a", "--shadow-min-agreement", "0.9"))
    for bad in (
        ["--shadow-s", "0"],
        ["--shadow-s", "-5"],
        ["--shadow-s", "inf"],
        ["--shadow-s", "nan"],
        ["--shadow-s", "ten"],
        ["--shadow-sample-rate", "1.5"],
        ["--shadow-min-agreement", "-0.1"],
        ["--shadow-max-latency-ratio", "0"],
    ):
        with pytest.raises(SystemExit):
            _args("--tag", "a", *bad)


class _Client:
    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report

    def rollout_report(self, rollout_id: int) -> dict[str, Any]:
        return self.report


def test_the_report_prints_the_shadow_evidence_and_survives_hostile_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shadow = {
        "outcome": "failed",
        "devices": 3,
        "device_classes": {
            "rpi4": {"paired": 80, "agreement": 0.9, "latency_ratio_p95": 1.1, "errors": {"x": 2}},
            "evil\x1b[31m": {"paired": "lots", "agreement": None, "errors": [1]},
            "odd": 7,
        },
    }
    report = {"rollout": {}, "decisions": [], "differential": {"shadow": shadow}}
    rollouts_report(_Client(report), argparse.Namespace(rollout_id=1), Output(json_mode=False))  # type: ignore[arg-type]
    text = capsys.readouterr().out
    assert "shadow stage failed: 3 device(s)" in text
    assert "rpi4: paired 80, agreement 0.90, p95 shadow/serving 1.10, shadow errors 2" in text
    assert "\x1b" not in text
