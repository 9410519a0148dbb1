"""Fault injection for crash tests: the agent SIGKILLs itself at a named update step.

Inert in production: nothing happens unless ``EDGEFLEET_AGENT_CRASH_AT`` names a point when the
agent starts (:func:`arm`, called once by ``edgefleet agent run``; an unknown name is a
configuration error, exit 2). The updater calls :func:`crash_point` once per point:

``after_download``  the bundle is complete and hashed in ``downloads/<sha256>.tar.gz``; not
                    yet unpacked (verify).
``after_verify``    the bundle is unpacked and verified into ``artifacts/<name>/<version>``
                    (the bundle file is gone); the new model is not loaded yet.
``before_switch``   the new model is loaded and self-tested; the old one still serves.
``after_switch``    the new model serves (probation starts next); ``current.json`` still
                    names the old one.
``before_commit``   probation passed; ``current.json`` not yet written.
``after_commit``    ``current.json`` names the new model; ``update.committed`` not yet sent.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from typing import Literal, get_args

from agent.errors import AgentConfigError

log = logging.getLogger(__name__)

ENV_VAR = "EDGEFLEET_AGENT_CRASH_AT"
CrashPoint = Literal[
    "after_download",
    "after_verify",
    "before_switch",
    "after_switch",
    "before_commit",
    "after_commit",
]
POINTS: tuple[CrashPoint, ...] = get_args(CrashPoint)

_armed: CrashPoint | None = None


def arm(environ: Mapping[str, str]) -> CrashPoint | None:
    """Read ``EDGEFLEET_AGENT_CRASH_AT`` (once, at start); unset or empty disarms."""
    global _armed
    value = environ.get(ENV_VAR, "")
    if not value:
        _armed = None
        return None
    for point in POINTS:
        if value == point:
            _armed = point
            log.warning("fault injection armed: the agent will SIGKILL itself", extra={"at": point})
            return point
    raise AgentConfigError(
        f"{ENV_VAR}={value[:40]!r} is not a crash point; use one of {', '.join(POINTS)}"
    )


def crash_point(name: CrashPoint) -> None:
    """SIGKILL this process if ``name`` is the armed point; otherwise do nothing."""
    if _armed == name:
        log.warning("crash point reached: SIGKILL", extra={"at": name})
        os.kill(os.getpid(), signal.SIGKILL)
