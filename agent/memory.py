"""The agent's memory: its resident set, and the device profile's budget for it.

A profile's ``budgets.memory_mb`` (``[engine] memory_mb`` in the agent's config) is RSS the
agent stays under with its models loaded. A model is checked twice (:func:`load_model
<agent.engine.model.load_model>`), while the model that serves now stays loaded (an update keeps
it for probation and rollback, so both must fit):

1. before its runtime session is made, by an estimate: the model file's size times a factor
   measured per backend (:data:`FILE_FACTORS`). It refuses only what cannot fit even then, so a
   device is not pushed into the OOM killer (systemd's ``MemoryMax``) by a load;
2. after the warm-up and self-test, by the RSS it actually added: a model whose activations,
   not its weights, are large (a conv net at a big input size) is seen here.

Either refusal is a :class:`~agent.errors.ModelLoadError` whose one line names the model, the
figures and the budget; the updater reports it in ``update.failed`` and the state's
``last_error`` and keeps the previous model serving.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agent.errors import ModelLoadError
from edgefleet.heap import cap_arenas, trim

#: Resident MB a loaded model adds per MB of model file, at least, by backend (measured with
#: ``bench/model_memory.py`` on x86_64, session + one run at one thread): onnxruntime
#: holds the weights once (MLPs of 8 and 32 MB: +18.0 and +42.2 MB, a slope of 1.0 over ~10 MB
#: paid once per process), and real conv nets add their activations on top (0.6-19 MB files:
#: 3.6-24x). LiteRT reads the flatbuffer's weights at ``allocate_tensors`` (1.0x) and adds its
#: arena (two real 0.2 MB models: +7.5 and +12.3 MB). The estimate is a floor, never a
#: ceiling: what it misses, the measured check after load catches.
FILE_FACTORS: dict[str, float] = {"onnx": 1.0, "tflite": 1.0}

#: What a backend's runtime costs the first time a model of its format is loaded: its import
#: and, for onnxruntime, the environment its first session makes (measured on x86_64 with
#: bench/memory_bench.py and bench/model_memory.py: onnxruntime import +21.0 MB, first session
#: ~10 MB over its weights; ai_edge_litert import +9.0 MB). Counted only while the runtime's
#: module is not yet imported (:data:`RUNTIME_MODULES`).
RUNTIME_MB: dict[str, float] = {"onnx": 31.0, "tflite": 9.0}
#: The modules whose presence in ``sys.modules`` means a backend's runtime is loaded.
RUNTIME_MODULES: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime",),
    "tflite": ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"),
}

BUDGET_HINT = "engine.memory_mb, the profile's budgets.memory_mb"

#: glibc malloc arenas the agent allows itself, as the systemd unit's ``MALLOC_ARENA_MAX=2``
#: (which wins when set): an agent started any other way (a container, by hand, the SSH
#: runner) with glibc's default of 8 per core measured +1.4 MB over the same 200 requests
#: (bench/memory_bench.py ``--env MALLOC_ARENA_MAX=``: +15.5 MB over bare against +14.1).
MALLOC_ARENAS = 2


def rss_mb() -> float | None:
    """This process's resident set size in MiB (None where /proc is missing)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return None
    return round(int(fields[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 2)


def check_estimate(what: str, fmt: str, model_file: Path, budget_mb: float) -> float | None:
    """Refuse ``what`` before loading when its file (and its runtime, the first time) cannot
    fit the budget beside what the agent holds now; returns the RSS measured now (the baseline
    of :func:`check_loaded`), None where it cannot be measured (then nothing is checked)."""
    now = rss_mb()
    if now is None:
        return None
    size_mb = model_file.stat().st_size / 2**20
    factor = FILE_FACTORS.get(fmt, 1.0)
    need = size_mb * factor
    how = f"{factor:g}x the file"
    if not runtime_loaded(fmt):
        need += RUNTIME_MB.get(fmt, 0.0)
        how += f" + {RUNTIME_MB.get(fmt, 0.0):g} MB for its runtime, not loaded yet"
    if now + need > budget_mb:
        raise ModelLoadError(
            f"{what} does not fit the memory budget: its {fmt} file ({size_mb:.1f} MB) needs at "
            f"least {need:.1f} MB more ({how}) and the agent holds {now:.1f} MB "
            f"of its {budget_mb:g} MB ({BUDGET_HINT}); not loaded"
        )
    return now


def runtime_loaded(fmt: str) -> bool:
    """Has a runtime for ``fmt`` been imported in this process?"""
    return any(name in sys.modules for name in RUNTIME_MODULES.get(fmt, ()))


def check_loaded(what: str, before_mb: float | None, budget_mb: float) -> None:
    """Refuse ``what`` after loading when the agent's RSS is now over the budget."""
    after = rss_mb()
    if after is None or after <= budget_mb:
        return
    added = f" (+{after - before_mb:.1f} MB for this model)" if before_mb is not None else ""
    raise ModelLoadError(
        f"{what} does not fit the memory budget: loaded, warmed up and self-tested, the agent "
        f"holds {after:.1f} MB{added}, over its {budget_mb:g} MB ({BUDGET_HINT}); refused"
    )


def release_freed() -> None:
    """Give the heap pages freed since the last call back to the system (glibc's
    ``malloc_trim``), after a model load or swap: building a runtime session frees megabytes of
    temporaries (the parsed model file, the self-test's arrays) that glibc would keep resident
    otherwise (measured: -0.8 MB after loading a 128x128 conv artifact, bench/memory_bench.py).
    A no-op where the C library is not glibc (musl)."""
    trim()


def cap_malloc_arenas() -> bool:
    """At most :data:`MALLOC_ARENAS` glibc arenas, set by ``edgefleet agent run`` before any
    thread exists; ``MALLOC_ARENA_MAX`` in the environment (the systemd unit's) wins. True if
    the cap was set here."""
    return cap_arenas(MALLOC_ARENAS)
