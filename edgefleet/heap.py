"""A process's C heap: a cap on glibc's malloc arenas, and freed pages handed back.

Shared by the agent (``agent.memory``: capped at start, trimmed after a model load) and the
fleet server (``fleet_server.heap``: capped at start, trimmed periodically). glibc makes up to
8 arenas per core, one per thread that finds the others busy, and keeps each one's freed pages
resident; a process of a dozen threads that allocates in bursts pays for that in RSS.

- :func:`cap_arenas`: at most ``n`` arenas, as ``MALLOC_ARENA_MAX`` would do, set with
  ``mallopt`` at start before the threads exist. An explicit ``MALLOC_ARENA_MAX`` in the
  environment wins.
- :func:`trim`: ``malloc_trim(0)``: the free pages of every arena go back to the system.

Both are no-ops where the C library is not glibc (musl, macOS).
"""

from __future__ import annotations

import ctypes
import os
from functools import cache

#: glibc's ``mallopt`` parameter for the arena cap (malloc.h: ``#define M_ARENA_MAX -8``).
M_ARENA_MAX = -8


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        if not (hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")):
            return None  # not glibc
    except (OSError, AttributeError):
        return None
    return libc


def cap_arenas(n: int, *, environ: dict[str, str] | None = None) -> bool:
    """At most ``n`` malloc arenas; False (nothing done) if ``n`` is 0, the environment sets
    ``MALLOC_ARENA_MAX`` itself, or this is not glibc."""
    env = os.environ if environ is None else environ
    libc = _libc()
    if n <= 0 or "MALLOC_ARENA_MAX" in env or libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, n) == 1)


def is_glibc() -> bool:
    """Whether this process's C library is glibc (the one these calls act on)."""
    return _libc() is not None


def trim() -> bool:
    """Hand the free pages of every arena back to the system; True if any were released."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))
