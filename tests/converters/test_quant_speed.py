"""What keeps ``--quantize auto`` short (issue #12): the latency probe's decisions, the
calibration range cache shared by every build of one method, the time-capped latency figure.
Real onnxruntime sessions and quantizer runs; assertions on behaviour, never on wall-clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.quantize.configs import StaticInt8
from converters.quantize.engines import QuantizeError, quantize
from converters.quantize.probe import (
    CANNOT_WIN_MARGIN,
    ProbeResult,
    cannot_win,
    probe,
    round_runs,
)
from converters.runtime import MIN_LATENCY_RUNS, make_session, measure_latency
from tests.converters.factories import conv_onnx, save_onnx


def _chain(width: int, depth: int) -> Any:
    """``depth`` chained MatMul+Relu of [1, width] x [width, width]: cost grows with both."""
    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "x"
    for i in range(depth):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"))
        current = f"r{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_round_runs_fits_a_round_to_the_model_speed() -> None:
    assert round_runs(100.0, round_s=0.25, most=20) == 3  # a 100 ms detector: 3 calls a round
    assert round_runs(0.1, round_s=0.25, most=20) == 20  # a 0.1 ms model: the cap
    assert round_runs(10_000.0, round_s=0.25, most=20) == 1  # never zero
    assert round_runs(0.0, round_s=0.25, most=7) == 7


def test_probe_verdicts_and_cannot_win() -> None:
    result = ProbeResult(
        fp32_ms=10.0,
        ms={"fast": 6.0, "even": 10.1, "slow": 40.0},
        speedup={"fast": 1.6, "even": 0.99, "slow": 0.25},
        rounds=5,
        runs_per_round=4,
    )
    assert result.why_dropped("fast") is None
    for name in ("even", "slow"):
        why = result.why_dropped(name)
        assert why is not None and why.startswith("latency probe:") and "not faster" in why
    assert cannot_win(6.5, None) is None  # nothing accepted yet: everything can still win
    assert cannot_win(6.0 * (1 + CANNOT_WIN_MARGIN) * 0.99, 6.0) is None  # within the margin
    why = cannot_win(9.0, 6.0)
    assert why is not None and "cannot win" in why and "9.000" in why


def test_probe_times_real_sessions_and_screens_a_much_slower_one() -> None:
    fp32 = make_session(_chain(64, 2).SerializeToString())
    same = make_session(_chain(64, 2).SerializeToString())
    heavy = make_session(_chain(512, 24).SerializeToString())  # 24x the light one's work
    feed = {"x": np.ones((1, 64), np.float32)}
    heavy_feed = {"x": np.ones((1, 512), np.float32)}
    # Different input widths cannot share one feed: time the heavy one against its own twin.
    result = probe({"fp32": fp32, "same": same}, feed, baseline="fp32", fp32_ms=0.01)
    assert set(result.ms) == {"same"} and result.rounds >= 5
    assert result.speedup["same"] > 0 and result.ms["same"] > 0
    light = make_session(_chain(512, 1).SerializeToString())
    screened = probe({"fp32": light, "heavy": heavy}, heavy_feed, baseline="fp32", fp32_ms=0.01)
    assert screened.speedup["heavy"] < 0.5
    why = screened.why_dropped("heavy")
    assert why is not None and why.startswith("latency probe:") and "heavy" in screened.ms


def test_static_int8_calibrates_once_per_method_and_reuses_the_ranges(tmp_path: Path) -> None:
    source = save_onnx(conv_onnx(opset=17), tmp_path / "conv.onnx")
    rows = np.random.default_rng(1).random((8, 3, 16, 16), dtype=np.float32)
    reads: list[int] = []

    class _Reader:
        """An onnxruntime calibration reader over ``rows`` that counts the rows it hands out."""

        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, Any] | None:
            if self.i >= len(rows):
                return None
            reads.append(self.i)
            self.i += 1
            return {"x": rows[self.i - 1 : self.i]}

        def rewind(self) -> None:
            self.i = 0

        def __len__(self) -> int:
            return len(rows)

    cache = tmp_path / "ranges"
    qdq = StaticInt8(format="qdq", per_channel=True, activation="int8")
    quantize(qdq, source=source, target=tmp_path / "a.onnx", calibration=_Reader, cache=cache)
    assert (cache / "minmax.json").is_file() and len(reads) == len(rows)
    # Another format, type and exclusion list: the cached MinMax ranges, no row read again.
    qop = StaticInt8(
        format="qoperator", per_channel=False, activation="uint8", excluded_nodes=("fc",)
    )
    quantize(qop, source=source, target=tmp_path / "b.onnx", calibration=_Reader, cache=cache)
    assert len(reads) == len(rows)
    session = make_session((tmp_path / "b.onnx").read_bytes())
    assert session.run(None, {"x": rows[:1]})[0].shape == (1, 5)
    # Another method calibrates (its own file); a corrupt cache is one clear error.
    entropy = qdq.model_copy(update={"method": "entropy"})
    quantize(entropy, source=source, target=tmp_path / "c.onnx", calibration=_Reader, cache=cache)
    assert (cache / "entropy.json").is_file() and len(reads) == 2 * len(rows)
    (cache / "minmax.json").write_text("{not json")
    with pytest.raises(QuantizeError):
        quantize(qdq, source=source, target=tmp_path / "d.onnx", calibration=_Reader, cache=cache)


def test_latency_figure_stops_on_its_time_budget() -> None:
    session = make_session(_chain(256, 4).SerializeToString())
    feed = {"x": np.ones((1, 256), np.float32)}
    capped = measure_latency(session, feed, warmup=50, runs=100_000, budget_s=0.0)
    assert capped.runs == MIN_LATENCY_RUNS and capped.p50_ms > 0
    full = measure_latency(session, feed, warmup=2, runs=30, budget_s=None)
    assert full.runs == 30 and full.p95_ms >= full.p50_ms


def test_minmax_rows_are_bounded_for_large_inputs_unless_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default static int8 calibrates on at most MAX_CALIBRATION_ELEMENTS input elements
    (at least 16 rows), and the report says so; an explicit --calibration-rows is honoured."""
    from converters.api import convert
    from converters.options import ConvertOptions
    from converters.quantize import search
    from tests.converters.factories import fragile_onnx, write_npz

    monkeypatch.setattr(search, "MAX_CALIBRATION_ELEMENTS", 16 * 20)  # 20 rows of 16 features
    source = save_onnx(fragile_onnx(), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    calib = write_npz(tmp_path / "c.npz", x=rng.standard_normal((64, 16)).astype(np.float32))
    quick: dict[str, Any] = {"calibration": calib, "latency_probe": False, "gate_rounds": 2}
    quick |= {"calibration_methods": ["minmax"], "max_exclusion_steps": 0, "latency_runs": 5}
    bounded = convert(source, tmp_path / "a", ConvertOptions(**quick)).report.quantization
    assert bounded is not None and bounded.calibration_samples == 20
    assert "static int8 calibrated on 20 of 64 rows" in " ".join(bounded.notes)
    given = ConvertOptions(**quick, calibration_rows=48)
    explicit = convert(source, tmp_path / "b", given).report.quantization
    assert explicit is not None and explicit.calibration_samples == 48
    assert not any("calibrated on" in n for n in explicit.notes)
    monkeypatch.setattr(search, "MAX_CALIBRATION_ELEMENTS", 16 * 4)  # below the 16-row floor
    floor = convert(source, tmp_path / "c", ConvertOptions(**quick)).report.quantization
    assert floor is not None and floor.calibration_samples == 16


def test_probe_stops_timing_a_candidate_once_its_median_is_settled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A candidate slower than fp32 in 3 of the 5 rounds is dropped whatever the last two show:
    it leaves the rotation (fp32 and a faster one keep every round)."""
    from converters.quantize import gate as gate_module
    from converters.quantize import probe as probe_module

    clock = [0]
    monkeypatch.setattr(gate_module.time, "perf_counter_ns", lambda: clock[0])
    monkeypatch.setattr(probe_module.time, "perf_counter_ns", lambda: clock[0])
    calls: dict[str, int] = {}

    class Timed:
        def __init__(self, name: str, ms: float) -> None:
            self.name, self.ms = name, ms

        def run(self, _outputs: object, _feed: object) -> None:
            calls[self.name] = calls.get(self.name, 0) + 1
            clock[0] += int(self.ms * 1e6)

    sessions = {"fp32": Timed("fp32", 10.0), "slow": Timed("slow", 12.0), "fast": Timed("fast", 5)}
    result = probe(sessions, {"x": 1}, baseline="fp32", fp32_ms=10.0)
    assert result.speedup["slow"] < 1.0 < result.speedup["fast"]
    assert set(result.settled) == {"slow"} and result.why_dropped("fast") is None
    why = result.why_dropped("slow")
    assert why is not None and "timing stopped" in why
    runs = result.runs_per_round
    # 4 screen calls each; then 5 rounds for fp32 and fast, 3 for slow.
    assert calls["fast"] == 4 + 5 * runs and calls["slow"] == 4 + 3 * runs
