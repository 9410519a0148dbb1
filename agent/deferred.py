"""Standard-library modules the agent's libraries import but a given config never uses.

paho-mqtt imports ``ssl`` and ``urllib.request`` at module level (TLS and proxy settings);
``http.server`` and ``http.client`` import ``ssl`` too. An agent on ``mqtt://`` and
``http://`` never makes a TLS socket, and fetches nothing over HTTP until an update or a
capture upload, yet pays for both at start: ``ssl`` with libssl (1.7 MB RSS on x86_64) and
``urllib.request`` with its handlers, ``hashlib`` with libcrypto (3.5 MB; paho imports it
for its websocket handshake, the agent's SHA-256 is :mod:`edgefleet.digest`'s)
(docs/memory.md). :func:`defer_unused` puts a stand-in
in ``sys.modules`` for each: ``import ssl`` still succeeds, and the real module is imported on
the first attribute anyone reads from it (``ssl.SSLContext``, ``urllib.request.urlopen``), once,
under a lock, so every thread then sees the one real module.

Called once by ``edgefleet agent run`` before anything else is imported; once the config is
loaded, :func:`load_for` imports ``ssl`` at once if it names an ``mqtts://`` or ``https://``
URL, so a config that uses TLS pays for it at start, as before.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

#: The modules deferred: TLS, HTTP fetching (an update's download, a capture upload), and
#: OpenSSL's hashes (paho's websocket handshake, urllib's digest auth; the agent's own SHA-256
#: goes through :mod:`edgefleet.digest`, which does not load them).
DEFERRED = ("ssl", "urllib.request", "hashlib")
#: URL schemes that need ``ssl`` from the start.
TLS_SCHEMES = frozenset({"mqtts", "https", "wss"})

_LOCK = threading.RLock()


class DeferredModule(types.ModuleType):
    """Stands in for a module until an attribute is read, then imports and forwards to it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_deferred_real"] = None

    def _deferred_load(self) -> types.ModuleType:
        real: types.ModuleType | None = self.__dict__["_deferred_real"]
        if real is not None:
            return real
        with _LOCK:
            real = self.__dict__["_deferred_real"]
            if real is None:
                name = self.__name__
                if sys.modules.get(name) is self:
                    del sys.modules[name]
                real = importlib.import_module(name)
                self.__dict__["_deferred_real"] = real
        return real

    def __getattr__(self, attr: str) -> Any:
        # Only called for names the stand-in lacks; dunder probes (``__path__``,
        # ``__file__``) by tools that inspect sys.modules do not import the module.
        real = self.__dict__["_deferred_real"]
        if real is None and attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return getattr(self._deferred_load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._deferred_load())

    @property
    def loaded(self) -> bool:
        """Whether the real module has been imported (for tests and the memory bench)."""
        return self.__dict__["_deferred_real"] is not None


def needs_tls(urls: Iterable[str | None]) -> bool:
    return any(u is not None and urlsplit(u).scheme.lower() in TLS_SCHEMES for u in urls)


def defer_unused() -> list[str]:
    """Defer ``ssl``, ``urllib.request`` and ``hashlib``; return the names deferred (a module
    already imported stays as it is)."""
    done = []
    with _LOCK:
        for name in DEFERRED:
            if name in sys.modules:
                continue
            stand_in = DeferredModule(name)
            sys.modules[name] = stand_in
            parent, _, child = name.rpartition(".")
            if parent:
                # ``import urllib.request`` then ``urllib.request.x`` reads the package's
                # attribute; a real import later replaces it with the real module.
                setattr(importlib.import_module(parent), child, stand_in)
            done.append(name)
    return done


def load_now(name: str) -> None:
    """Import a deferred module now (a config that will use it: fail at start, not later)."""
    module = sys.modules.get(name)
    if isinstance(module, DeferredModule):
        module._deferred_load()
    else:
        importlib.import_module(name)


def load_for(urls: Iterable[str | None]) -> None:
    """Import ``ssl`` now if one of ``urls`` needs TLS."""
    if needs_tls(urls):
        load_now("ssl")


def is_loaded(name: str) -> bool:
    """Whether ``name`` has really been imported (a stand-in not yet used does not count)."""
    module = sys.modules.get(name)
    if module is None:
        return False
    return not isinstance(module, DeferredModule) or module.loaded
