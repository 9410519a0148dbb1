"""What a person sees while converting: phase lines with elapsed time, per-node lines only with
--verbose, third-party logging silenced, and a warning with the numbers when the calibration
data looks like raw 0..255 pixels."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converters.quantize.stage import Progress
from converters.quiet import quiet_third_party
from converters.value_range import raw_pixel_warnings
from tests.converters.factories import fragile_onnx, save_onnx, write_npz

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--calibration-method", "minmax"]


def _convert(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "converters", *argv],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_progress_lines_carry_elapsed_time_and_detail_needs_verbose(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain, verbose, off = (
        Progress(True),
        Progress(True, verbose=True),
        Progress(False, verbose=True),
    )
    plain("phase one")
    plain.detail("node line")
    verbose.detail("node line")
    off("nothing")
    off.detail("nothing")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("edgefleet convert: [") and err[0].endswith("s] phase one")
    assert err[1].endswith("s]   node line")


def test_third_party_loggers_are_silenced_but_a_users_setting_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setenv("GLOG_minloglevel", "0")
    logging.getLogger("absl").setLevel(logging.INFO)
    quiet_third_party()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert os.environ["GLOG_minloglevel"] == "0"
    assert logging.getLogger("absl").level == logging.ERROR


@pytest.mark.parametrize(
    ("rows", "warned"),
    [
        (np.arange(256, dtype=np.float32).reshape(16, 16), True),  # whole numbers to 255
        (np.arange(256, dtype=np.float32).reshape(16, 16) / 255, False),  # 0..1
        (np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32) * 40, False),
        (np.arange(256, dtype=np.uint8).reshape(16, 16), False),  # a uint8 model input
        (np.full((4, 16), np.nan, np.float32), False),
        (np.zeros((0, 16), np.float32), False),
    ],
)
def test_raw_pixel_warning(rows: np.ndarray, warned: bool) -> None:
    lines = raw_pixel_warnings({"x": rows})
    assert bool(lines) is warned
    if warned:
        assert "values 0..255, 100% whole numbers" in lines[0]


def test_calibration_far_from_the_eval_range_is_named() -> None:
    calib = {"x": np.linspace(-300, 300, 64, dtype=np.float32).reshape(4, 16) + 0.5}
    lines = raw_pixel_warnings(calib, evaluation={"x": np.linspace(0, 1, 64).reshape(4, 16)})
    assert len(lines) == 1 and "eval data is 0..1" in lines[0]


def test_cli_warns_on_raw_pixels_and_shows_budget_steps_only_with_verbose(tmp_path: Path) -> None:
    source = save_onnx(fragile_onnx(), tmp_path / "f.onnx")
    pixels = np.random.default_rng(1).integers(0, 256, (64, 16)).astype(np.float32)
    calib = write_npz(tmp_path / "c.npz", x=pixels)
    done = _convert(
        str(source), "-o", str(tmp_path / "a"), "--calibration", str(calib), "--json", *QUICK,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning: calibration input 'x': values 0..255" in done.stderr
    notes = json.loads(done.stdout)["report"]["quantization"]["notes"]
    assert any("raw 0..255 pixels" in note for note in notes)
    normal = write_npz(tmp_path / "n.npz", x=(pixels / 255).astype(np.float32))
    # --no-latency-probe: int8 of this 16-wide MLP is not faster than fp32, and the budget
    # loop's lines are what is tested.
    quiet = _convert(
        str(source), "-o", str(tmp_path / "b"), "--calibration", str(normal), "--json", *QUICK,
        "--no-latency-probe", cwd=tmp_path,
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    candidates = json.loads(quiet.stdout)["report"]["quantization"]["candidates"]
    assert any(c["budget_steps"] for c in candidates)  # the loop ran...
    assert "budget loop: sparing" not in quiet.stderr  # ...but its per-node lines need --verbose
    assert "warning:" not in quiet.stderr
    verbose = _convert(
        str(source), "-o", str(tmp_path / "c"), "--calibration", str(normal), "--verbose", *QUICK,
        "--no-latency-probe", cwd=tmp_path,
    )  # fmt: skip
    assert verbose.returncode == 0, verbose.stderr
    assert "budget loop: sparing" in verbose.stderr


def test_time_budget_stops_the_search_and_keeps_the_best_so_far(tmp_path: Path) -> None:
    source = save_onnx(fragile_onnx(), tmp_path / "f.onnx")
    rows = np.random.default_rng(2).random((64, 16)).astype(np.float32)
    calib = write_npz(tmp_path / "c.npz", x=rows)
    done = _convert(
        str(source), "-o", str(tmp_path / "a"), "--calibration", str(calib), "--json",
        "--time-budget", "0.001", *QUICK, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["report"]["quantization"]
    untried = [k for k, v in report["skipped"].items() if "--time-budget 0.001 s reached" in v]
    assert untried, report["skipped"]
    assert report["chosen"] == "fp32"  # nothing else was tried: the best so far is fp32
    assert "time budget reached" in done.stderr
    bad = _convert(str(source), "-o", str(tmp_path / "b"), "--time-budget", "-1", cwd=tmp_path)
    assert bad.returncode == 2 and "time_budget_s" in bad.stderr
