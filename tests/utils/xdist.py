"""What the tests share when pytest-xdist runs them in several worker processes (``make test``
runs ``-n 3 --dist loadgroup``; ``make test PYTEST_WORKERS=0`` runs them in one process).

``XDIST_GROUPS`` is the one table of tests that must not overlap: ``--dist loadgroup`` sends
each group to a single worker, one test after the other. Every other resource is already
private to a test (free ports, a fresh PostgreSQL database per test, random MQTT client ids,
device ids and shared-subscription groups, ``tmp_path``, network namespaces with their own /24),
so the rest spreads freely, a whole file per worker at a time (``scope_of``).
"""

from __future__ import annotations

import fcntl
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Group:
    why: str
    files: tuple[str, ...]


XDIST_GROUPS: dict[str, Group] = {
    "podman": Group(
        "one image build directory and wheel cache (~/.cache/edgefleet/images/build) and one "
        "podman store: the session-scoped images are built once, on one worker",
        (
            "tests/containers/test_images.py",
            "tests/containers/test_stack.py",
            "tests/containers/test_arm64.py",
        ),
    ),
    "arm64-board": Group(
        "one cached board root (~/.cache/edgefleet/hil): the SSH tests glob its /tmp for run "
        "folders another run on the board would leave; emulation takes a whole core each "
        "(the armhf board's too)",
        ("tests/hil/test_arm64.py", "tests/hil/test_ssh_arm64.py", "tests/hil/test_armhf.py"),
    ),
    "cpu-timing": Group(
        "real-model conversions whose quantization choice and assertions rest on latencies "
        "measured here (paired, interleaved): two at once would measure each other, and "
        "TensorFlow/PyTorch conversions side by side take several GB each",
        (
            "tests/converters/test_corpus.py",
            "tests/converters/test_corpus_tasks.py",
            "tests/converters/test_onnx2tf.py",
            "tests/converters/test_litert_torch.py",
        ),
    ),
}


def worker_id() -> str | None:
    """``gw0``, ``gw1``… inside a pytest-xdist worker; None in a serial run."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def group_of(path: str) -> str | None:
    """The pinned group of a test file (a path relative to the repository), if any."""
    for name, group in XDIST_GROUPS.items():
        if path in group.files:
            return name
    return None


def scope_of(nodeid: str) -> str:
    """The unit of work a worker takes whole: a pinned group, else the test's file (its
    module- and class-scoped fixtures are then made once)."""
    path = nodeid.split("::", 1)[0]
    return group_of(path) or path


def make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadgroup`` by ``scope_of``: pytest-xdist 3.8 marks a group by renaming the
    item's ``_nodeid``, which pytest 9 no longer reads (``nodeid`` comes from ``_id``), so its
    own loadgroup silently spread every group over all workers."""
    from xdist.scheduler import LoadScopeScheduling

    class FileAndGroupScheduling(LoadScopeScheduling):
        def __init__(self, config: pytest.Config, log: object) -> None:
            super().__init__(config, log)  # type: ignore[arg-type]
            self.workqueue = _PinnedFirst()

        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return FileAndGroupScheduling(config, log)


class _PinnedFirst(OrderedDict[str, Any]):
    """The scheduler's work queue with the pinned groups at its head, in ``XDIST_GROUPS``'
    order: each is a chain only one worker can run (images, emulated boards, timed
    conversions: minutes each), so started last they were the run's tail (docs/testing.md).
    The rest keeps the scheduler's order (most tests first)."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if key in XDIST_GROUPS:
            for name in reversed([g for g in XDIST_GROUPS if g in self]):
                self.move_to_end(name, last=False)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def once_per_run(
    factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path | None]
) -> Path | None:
    """``build(folder)`` once for the whole run, whichever worker asks first; the others wait
    for it and get the same folder (None: ``build`` found nothing to make). In a serial run,
    a fresh folder."""
    if worker_id() is None:
        return build(factory.mktemp(name))
    # pytest-N/, above every worker's popen-gwK/: one per run, shared by its workers.
    return once_in(factory.getbasetemp().parent, name, build)


def once_in(shared: Path, name: str, build: Callable[[Path], Path | None]) -> Path | None:
    """``build(shared / "shared-<name>")`` unless a process did it before (under a file lock:
    the others wait, then get its outcome)."""
    folder = shared / f"shared-{name}"
    with _locked(shared / f"shared-{name}.lock"):
        outcome = shared / f"shared-{name}.outcome"
        if outcome.exists():
            return folder if outcome.read_text() == "made" else None
        folder.mkdir(exist_ok=True)
        made = build(folder)
        outcome.write_text("made" if made is not None else "none")
        return made
