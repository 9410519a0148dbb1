"""SHA-256 without loading OpenSSL's libcrypto into a process that has not loaded it already.

``hashlib`` imports ``_hashlib``, which maps libcrypto and initialises OpenSSL's providers: 3.5
of the agent's 4.1 MB for "hashlib" (bench/memory_bench.py, docs/memory.md), resident for the
process's life, for one SHA-256 of the model file at each load. CPython's builtin ``_sha256``
computes the same digest from its own few kilobytes, about 5x slower on x86_64 (134 against
689 MB/s measured: ~60 ms more per 10 MB of model, at load and after a download).

:func:`sha256` uses OpenSSL's when ``_hashlib`` is already imported (the server, the converter,
an agent that loaded it for TLS websockets or signatures' key ids): there it costs nothing
more. Otherwise the builtin. Both give the same digest; ``hashlib`` is the fallback where an
interpreter was built without ``_sha256``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from functools import cache
from typing import Protocol


class Hash(Protocol):
    """The part of a ``hashlib`` hash object the callers use."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


def sha256(data: bytes | memoryview = b"") -> Hash:
    """A SHA-256 hash object, OpenSSL's if it is loaded, else CPython's builtin."""
    builtin = None if openssl_loaded() else _builtin()
    if builtin is not None:
        return builtin(data)
    import hashlib

    return hashlib.sha256(data)


def openssl_loaded() -> bool:
    """Whether this process has loaded OpenSSL's hashes (for tests and the memory bench)."""
    return "_hashlib" in sys.modules


@cache
def _builtin() -> Callable[[bytes | memoryview], Hash] | None:
    try:
        module = importlib.import_module("_sha256")  # CPython's own; typeshed has no stub
    except ImportError:
        return None
    new: Callable[[bytes | memoryview], Hash] = module.sha256
    return new
