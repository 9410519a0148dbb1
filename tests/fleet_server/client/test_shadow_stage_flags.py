"""``rollouts create --shadow-s`` and its thresholds become the strategy's ``shadow`` block."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fleet_server.client.api import FleetClientError
from fleet_server.client.cli import register
from fleet_server.client.rollouts import _spec
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
