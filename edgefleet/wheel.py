"""This source tree's ``edgefleet`` wheel, for the tools that ship it somewhere else: the SSH
runner (a board's venv), the emulated arm64 board's tests and the container images.

Built from a copy: setuptools writes ``build/`` and ``*.egg-info`` beside the sources it
builds, and the working tree must stay as it was (CI checks that nothing is littered).
Standard library only; nothing on a device imports it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Never copied: version control, virtualenvs, build output, caches.
ALWAYS_LEFT_OUT = (".git", ".venv*", "build", "*.egg-info", "__pycache__", ".*_cache")


class WheelBuildError(RuntimeError):
    """``pip wheel`` failed; the message ends with its output."""


def build_wheel(out: Path, *, leave_out: tuple[str, ...] = (), timeout_s: float = 600) -> Path:
    """Build the wheel into ``out`` (older edgefleet wheels there are removed) and return it.

    ``leave_out``: more glob patterns not copied (e.g. ``tests``, ``bench``: not packaged
    anyway, only copied for nothing).
    """
    out.mkdir(parents=True, exist_ok=True)
    source = out / "src"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*ALWAYS_LEFT_OUT, *leave_out))
    for old in out.glob("edgefleet-*.whl"):
        old.unlink()
    try:
        done = subprocess.run(  # noqa: S603 (our own interpreter and paths)
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
            + ["-w", str(out), str(source)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WheelBuildError(f"building the edgefleet wheel took over {timeout_s:g} s") from exc
    finally:
        shutil.rmtree(source, ignore_errors=True)
    wheels = sorted(out.glob("edgefleet-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        tail = (done.stderr or done.stdout).strip()[-1500:]
        raise WheelBuildError(
            f"building the edgefleet wheel failed (exit {done.returncode}):\n{tail}"
        )
    return wheels[0]
