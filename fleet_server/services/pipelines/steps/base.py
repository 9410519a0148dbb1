"""What a pipeline step is: a small object with a name and ``run(ctx) -> StepResult``.

A step does its work outside any transaction and returns what it found; the driver records
it. Every step can be run again after a restart (it rebuilds its output under the run's
directory, or finds what an earlier attempt already recorded), which is how a run resumes at
its step. A step that cannot go on raises :class:`StepError` with one line saying why.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine

from fleet_server.services.pipelines.config import ModelPipeline
from fleet_server.services.rollouts import RolloutEngine
from fleet_server.storage import ArtifactStore


class StepError(Exception):
    """The step failed; the run stops and an alert opens. ``log`` is kept with the step."""

    def __init__(self, message: str, *, log: str = "", numbers: dict[str, Any] | None = None):
        super().__init__(message)
        self.log = log
        self.numbers = numbers or {}


@dataclass(frozen=True)
class RunView:
    """The run as the step sees it (a copy: steps do not write the run row)."""

    id: int
    model: str
    parent_version: str | None
    candidate_version: str | None
    dataset_sha256: str | None
    rollout_id: int | None
    trigger: dict[str, Any]
    context: dict[str, Any]
    started_at: datetime


@dataclass(frozen=True)
class StepContext:
    run: RunView
    config: ModelPipeline
    run_dir: Path
    engine: Engine
    store: ArtifactStore
    rollouts: RolloutEngine | None
    trusted_keys: Sequence[bytes]
    require_signed: bool
    log_bytes: int
    now: datetime


@dataclass
class StepResult:
    """``done`` False: the step waits (polled again next tick, e.g. a rollout in progress)."""

    detail: str
    done: bool = True
    numbers: dict[str, Any] = field(default_factory=dict)
    log: str | None = None
    #: Run fields to set (parent_version, candidate_version, dataset_sha256, rollout_id).
    run_fields: dict[str, Any] = field(default_factory=dict)
    #: Added to the run's context for later steps.
    context: dict[str, Any] = field(default_factory=dict)


class Step(Protocol):
    name: str

    def run(self, ctx: StepContext) -> StepResult: ...


def run_command(
    argv: list[str], *, timeout_s: float, env: dict[str, str], log_path: Path, what: str
) -> tuple[int, str]:
    """Run ``argv`` (no shell) with stdout and stderr into ``log_path``; (exit code, output).
    The output goes to a file, not a pipe, so a chatty command never blocks on a full pipe."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log_path.open("wb") as out:
            done = subprocess.run(  # noqa: S603 - argv from the operator's settings, no shell
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout_s, check=False
            )
    except subprocess.TimeoutExpired as err:
        raise StepError(f"{what} did not finish in {timeout_s:g} s", log=_read(log_path)) from err
    except OSError as err:
        raise StepError(f"{what} could not start: {err}"[:500]) from err
    return done.returncode, _read(log_path)


def _read(path: Path, limit: int = 256 * 1024) -> str:
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def last_line(log: str) -> str:
    lines = [line for line in log.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
