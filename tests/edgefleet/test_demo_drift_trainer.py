"""The drift demo trainer's mode file (``--mode-from``): how the demo breaks its training command
between runs. A missing file trains normally; ok/worse/crash select the mode; anything else is
refused with one line, and a huge file is not read whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.demo_drift.trainer import parse


def _mode(tmp_path: Path, text: str | None) -> tuple[bool, bool]:
    mode = tmp_path / "mode"
    if text is not None:
        mode.write_text(text)
    args = parse(["--snapshot", str(tmp_path), "--output", "m.pkl", "--mode-from", str(mode)])
    return args.worse, args.crash


def test_the_mode_file_selects_the_training_mode(tmp_path: Path) -> None:
    assert _mode(tmp_path, None) == (False, False)
    assert _mode(tmp_path, "ok\n") == (False, False)
    assert _mode(tmp_path, "worse\n") == (True, False)
    assert _mode(tmp_path, " crash ") == (False, True)


@pytest.mark.parametrize("text", ["", "WORSE", "rm -rf /", "worse" + " " * 20 + "x", "é" * 10**6])
def test_a_bad_mode_file_is_refused(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        _mode(tmp_path, text)
    assert refused.value.code == 2
    assert "mode must be one of ok, worse, crash" in capsys.readouterr().err


def test_flags_and_the_mode_file_do_not_mix(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        parse(["--snapshot", ".", "--output", "m", "--worse", "--mode-from", str(tmp_path / "m")])
