"""``rollouts create --require-compare`` flags become the spec's ``require_compare``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fleet_server.client.api import FleetClientError
from fleet_server.client.cli import register
from fleet_server.client.rollouts import _spec


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgefleet")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["fleet", "rollouts", "create", "digits", "1.1.0", *argv])


def test_flags_build_require_compare(tmp_path: Path) -> None:
    assert "require_compare" not in _spec(_args("--tag", "a"))
    assert _spec(_args("--tag", "a", "--require-compare"))["require_compare"] == {}
    body = _spec(
        _args("--tag", "a", "--require-compare", "--compare-max-agreement-drop", "0.1",
              "--compare-max-accuracy-drop", "off", "--compare-max-latency-ratio", "2")
    )  # fmt: skip
    assert body["require_compare"] == {
        "max_agreement_drop": 0.1,
        "max_accuracy_drop": None,
        "max_latency_ratio": 2.0,
    }
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"require_compare": {"max_latency_ratio": 3}}))
    merged = _spec(_args("--spec", str(spec), "--tag", "a", "--require-compare",
                         "--compare-max-agreement-drop", "0"))  # fmt: skip
    assert merged["require_compare"] == {"max_latency_ratio": 3, "max_agreement_drop": 0.0}


def test_thresholds_without_require_compare_or_out_of_range_are_refused() -> None:
    with pytest.raises(FleetClientError, match="need --require-compare"):
        _spec(_args("--tag", "a", "--compare-max-latency-ratio", "2"))
    for bad in (["--compare-max-agreement-drop", "1.5"], ["--compare-max-accuracy-drop", "maybe"]):
        with pytest.raises(SystemExit):
            _args("--require-compare", *bad)
