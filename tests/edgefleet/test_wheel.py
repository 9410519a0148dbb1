"""The one wheel builder the SSH runner, the arm64 board's tests and the images share."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from edgefleet import wheel


def _status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored"],  # noqa: S607
        cwd=wheel.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.integration
def test_the_wheel_holds_the_packages_and_the_tree_is_left_as_it_was(tmp_path: Path) -> None:
    before = _status()
    (tmp_path / "edgefleet-0.0.1-py3-none-any.whl").write_bytes(b"an older build")
    built = wheel.build_wheel(tmp_path, leave_out=("tests", "bench"))
    assert [p.name for p in tmp_path.glob("edgefleet-*.whl")] == [built.name]  # old one gone
    names = zipfile.ZipFile(built).namelist()
    assert "agent/service.py" in names and "edgefleet/contract/__init__.py" in names
    assert not any(n.startswith("tests/") for n in names)
    assert not (tmp_path / "src").exists()
    assert _status() == before  # no build/ or *.egg-info beside the sources


def test_a_failing_build_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "tree"
    broken.mkdir()
    (broken / "pyproject.toml").write_text("[project\nname = ")
    monkeypatch.setattr(wheel, "ROOT", broken)
    with pytest.raises(wheel.WheelBuildError, match="building the edgefleet wheel failed"):
        wheel.build_wheel(tmp_path / "out")
    assert not (tmp_path / "out" / "src").exists()
