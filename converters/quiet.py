"""Third-party logging off by default: TensorFlow's C++ and Python loggers, absl and the
TFLite converter print dozens of lines per conversion that say nothing to the user. Applied by
the CLI before any of them is imported (``--verbose`` keeps them)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

#: Environment read once by TensorFlow's and the TFLite converter's C++ logging at import.
_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "2", "ABSL_MIN_LOG_LEVEL": "3"}
_LOGGERS = ("tensorflow", "absl", "h5py", "keras", "tf2onnx", "onnx2tf", "torch.onnx")


def quiet_third_party() -> None:
    """Silence the noisy libraries (a user's own setting of the variables wins)."""
    for name, value in _ENV.items():
        os.environ.setdefault(name, value)
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


_QUIET = False


def enable() -> None:
    """Turn quiet imports on (the CLI, unless --verbose) and silence the loggers."""
    global _QUIET
    _QUIET = True
    quiet_third_party()


@contextlib.contextmanager
def captured_fds(*fds: int) -> Iterator[None]:
    """File descriptors ``fds`` written to a temporary file for the duration (C++ libraries
    write there directly); on an exception what they wrote goes to stderr (the last 4 kB)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile() as sink:
        for fd in fds:
            os.dup2(sink.fileno(), fd)
        try:
            yield
        except BaseException:
            _restore(saved)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace")[-4000:])
            raise
        finally:
            _restore(saved)


def _restore(saved: dict[int, int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in list(saved.items()):
        os.dup2(copy, fd)
        os.close(copy)
        del saved[fd]


@contextlib.contextmanager
def tool_output() -> Iterator[None]:
    """Around a third-party tool that prints (TensorFlow's converter, tf2onnx): its output never
    reaches stdout (kept for --json); when quiet it is not shown at all, else it goes to stderr."""
    if _QUIET:
        with captured_fds(1, 2):
            yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def import_module(name: str) -> Any:
    """``importlib.import_module``; when quiet, TensorFlow's import-time C++ lines (written to
    file descriptor 2 before absl reads any setting: 'All log messages before
    absl::InitializeLog()', oneDNN notices) are kept from the terminal. A failed import
    re-raises with what it printed."""
    if not _QUIET or name in sys.modules:
        return importlib.import_module(name)
    with captured_fds(2):
        return importlib.import_module(name)
