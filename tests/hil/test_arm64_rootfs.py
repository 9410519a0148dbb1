"""The arm64 board's cache key and lookup, and how a command enters it (no emulation needed)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from hil.arm64 import __main__ as cli
from hil.arm64.rootfs import Board, RootfsSpec, board_key, find_board


def test_the_key_covers_what_goes_into_the_root_and_nothing_else() -> None:
    spec = RootfsSpec()
    assert spec.key() == RootfsSpec().key() and len(spec.key()) == 16
    changed = [
        replace(spec, suite="trixie"),
        replace(spec, arch="armhf"),
        replace(spec, packages=(*spec.packages, "openssh-server")),
        replace(spec, requirements=spec.requirements.replace("numpy==", "numpy==1.26.4 #")),
    ]
    assert len({s.key() for s in changed} | {spec.key()}) == len(changed) + 1
    # Same root from another mirror, or with the packages listed in another order.
    assert replace(spec, mirror="http://mirror.example/debian").key() == spec.key()
    assert replace(spec, packages=tuple(reversed(spec.packages))).key() == spec.key()
    reworded = "# another comment\n\n" + spec.requirements.replace("# ", "#  ")
    assert replace(spec, requirements=reworded).key() == spec.key()
    assert "numpy==2.4.6" in spec.pins() and not any("#" in p for p in spec.pins())
    assert board_key(spec) == f"arm64-{spec.key()}"


def test_only_a_finished_build_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_HIL_CACHE", str(tmp_path))
    assert find_board() is None
    partial = tmp_path / (board_key() + ".partial")
    (partial / "rootfs").mkdir(parents=True)
    (partial / "board.json").write_text("{}")
    assert find_board() is None  # an interrupted build is never used
    done = tmp_path / board_key()
    (done / "rootfs").mkdir(parents=True)
    assert find_board() is None  # no board.json: the build did not finish
    (done / "board.json").write_text(json.dumps({"key": board_key()}))
    found = find_board()
    assert found is not None and found.rootfs == done / "rootfs"


def test_paths_reach_the_board_as_arguments_not_shell_text(tmp_path: Path) -> None:
    board = Board(path=tmp_path / "b; touch /tmp/pwned", key="k")
    work = tmp_path / "w $(id)"
    argv = board.command(["python3", "-c", "print(1)"], work=work)
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    script = argv[7]
    # The shell script is fixed text; every path and the command follow it as "$@".
    assert str(work) not in script and str(board.rootfs) not in script
    assert argv[9:] == [str(board.rootfs), str(work), "python3", "-c", "print(1)"]
    assert board.command(["true"])[10] == ""  # no work folder: nothing bind-mounted


def test_info_on_an_empty_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGEFLEET_HIL_CACHE", str(tmp_path))
    assert cli.main(["info"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["built"] is False and shown["key"] == board_key()
    with pytest.raises(SystemExit):
        cli.parse(["destroy"])


def test_the_armhf_board_is_its_own_root_with_numpy_1_from_debian() -> None:
    arm64, armhf = RootfsSpec.for_arch("arm64"), RootfsSpec.for_arch("armhf")
    assert arm64 == RootfsSpec() and armhf.arch == "armhf"
    assert board_key(armhf).startswith("armhf-") and armhf.key() != arm64.key()
    # numpy 1 and opencv come from Debian (no armv7l wheels); tflite-runtime 2.14 needs numpy 1.
    assert {"python3-numpy", "python3-opencv", "build-essential"} <= set(armhf.packages)
    assert "tflite-runtime==2.14.0" in armhf.pins()
    assert not any(p.startswith(("numpy", "onnxruntime", "ai-edge-litert")) for p in armhf.pins())
    # Wheels only, except what has no armv7l wheel and builds from its sdist.
    assert arm64.pip_formats() == ["--only-binary=:all:"]
    assert armhf.pip_formats() == ["--only-binary=:all:", "--no-binary=msgspec,cffi"]
    assert replace(armhf, from_source=("msgspec",)).key() != armhf.key()
    with pytest.raises(ValueError, match="armel"):
        RootfsSpec.for_arch("armel")


def test_info_names_the_armhf_board(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGEFLEET_HIL_CACHE", str(tmp_path))
    assert cli.main(["--arch", "armhf", "info"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["key"] == board_key(RootfsSpec.for_arch("armhf")) != board_key()
