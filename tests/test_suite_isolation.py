"""The parallel suite's own machinery (tests/utils/xdist.py): a run-wide build happens once
however many worker processes ask at once, and the pinned groups name files that exist."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.xdist import XDIST_GROUPS, group_of

ROOT = Path(__file__).resolve().parents[1]

#: One "worker": asks for the shared build; the build logs its pid and is slow enough that the
#: other processes ask while it runs.
WORKER = """
import os, sys, time
from pathlib import Path
from tests.utils.xdist import once_in

shared, make, workers = Path(sys.argv[1]), sys.argv[2] == "make", int(sys.argv[3])

# Start together: every process is up (imports done) before any asks.
(shared / f"ready-{os.getpid()}").touch()
while len(list(shared.glob("ready-*"))) < workers:
    time.sleep(0.01)

def build(folder):
    with (shared / "builds.log").open("a") as log:
        log.write(f"{os.getpid()}\\n")
    time.sleep(0.5)
    if not make:
        return None
    (folder / "model.bin").write_bytes(b"x")
    return folder

print(once_in(shared, "models", build))
"""


def _ask_at_once(shared: Path, *, make: bool, workers: int = 4) -> list[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(shared), "make" if make else "none", str(workers)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        outs.append(out.strip())
    return outs


@pytest.mark.integration
def test_a_run_wide_build_happens_once_for_every_worker(tmp_path: Path) -> None:
    answers = _ask_at_once(tmp_path, make=True)
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1
    assert answers == [str(tmp_path / "shared-models")] * 4
    assert (tmp_path / "shared-models" / "model.bin").read_bytes() == b"x"
    # A later worker (a test that asks late in the run) gets the same folder, no new build.
    assert _ask_at_once(tmp_path, make=True, workers=1) == answers[:1]
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1


@pytest.mark.integration
def test_a_build_that_found_nothing_to_make_is_not_retried(tmp_path: Path) -> None:
    """TensorFlow not installed: every worker skips, one probe only."""
    assert _ask_at_once(tmp_path, make=False) == ["None"] * 4
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1


def test_pinned_groups_name_test_files_that_exist() -> None:
    """A renamed file would drop out of its group silently and run beside the others."""
    for name, group in XDIST_GROUPS.items():
        assert group.files and group.why, name
        for path in group.files:
            assert (ROOT / path).is_file(), f"{name}: {path} does not exist"
            assert group_of(path) == name
    assert group_of("tests/test_suite_isolation.py") is None


def test_a_worker_takes_whole_files_and_whole_groups() -> None:
    """The scheduler's unit of work (pytest-xdist's own loadgroup marks do not reach it under
    pytest 9): a pinned file goes with its group, any other file stays whole."""
    from tests.utils.xdist import scope_of

    assert scope_of("tests/containers/test_stack.py::test_two[a-b]") == "podman"
    assert scope_of("tests/containers/test_images.py::test_x") == "podman"
    assert scope_of("tests/edgefleet/test_signing.py::test_a[x::y]") == (
        "tests/edgefleet/test_signing.py"
    )


class _Watched(logging.Handler):
    """A handler that only remembers being closed (as absl's, made at its import, would close
    its stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.was_closed = False

    def emit(self, record: logging.LogRecord) -> None:
        pass

    def close(self) -> None:
        self.was_closed = True
        super().close()


@pytest.mark.integration
def test_the_live_server_leaves_the_process_logging_alone(tmp_path: Path) -> None:
    """uvicorn's default logging config runs dictConfig, which closes every handler the process
    made: tests share one process per worker, so a test's server must not touch the others'."""
    from tests.utils.server import live_server

    watched = _Watched()
    root = logging.getLogger()
    before = list(root.handlers)
    with live_server(tmp_path):
        pass
    assert not watched.was_closed
    assert root.handlers == before


#: Three tests in the order a worker once ran them: TensorFlow (here absl alone) imported under
#: pytest's global capture, then a live server under capsys, then anything that prints.
ABSL_THEN_LIVE_SERVER = """
from pathlib import Path

import pytest


def test_imports_absl() -> None:
    import absl.logging  # its handler takes the sys.stderr of this moment: pytest's capture file


def test_live_server_under_capsys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.utils.server import live_server

    with live_server(tmp_path):
        pass


def test_prints() -> None:
    print("still captured")
"""


@pytest.mark.integration
def test_a_live_server_after_absl_keeps_pytest_capture_working(tmp_path: Path) -> None:
    """The 893 errors of the first 3-worker run ("I/O operation on closed file" in pytest's
    capture on every test after tests/agent/test_enroll.py on one worker)."""
    pytest.importorskip("absl.logging", reason="absl comes with TensorFlow (the convert-tf extra)")
    (tmp_path / "test_order.py").write_text(ABSL_THEN_LIVE_SERVER)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
        + ["--rootdir", str(tmp_path), str(tmp_path / "test_order.py")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0 and "3 passed" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]
