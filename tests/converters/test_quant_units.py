"""Quantization building blocks: the latency gate's decisions (injected numbers), candidate
planning per target, typed configs and their dispatch, the tensor ranking, calibration readers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from converters.calibration import open_calibration, peek_row_shape
from converters.errors import InputError
from converters.quantize.candidates import OpMix, Target, op_mix, plan_candidates
from converters.quantize.configs import (
    DynamicInt8,
    Fp16,
    QuantConfig,
    StaticInt8,
    config_name,
    config_record,
    precision_of,
)
from converters.quantize.engines import ENGINES
from converters.quantize.gate import (
    Timing,
    benchmark,
    choose,
    choose_confirmed,
    gate,
    median_interval,
)
from converters.quantize.ranking import fake_quant_error, rank_tensors
from edgefleet.contract import Preprocessing, TensorSpec
from edgefleet.contract.manifest import ResizeSpec
from tests.converters.factories import digits_28, fragile_onnx, image_tree, write_npz

X86_VNNI = Target("host", "x86_64", True)
X86_OLD = Target("x86_64", "x86_64", False)
ARM = Target("rpi4", "aarch64", False)
CNN = OpMix(convs=3, matmuls=2, ml_ops=0, total=12)
MLP = OpMix(convs=0, matmuls=2, ml_ops=0, total=5)


# -- the latency gate: pure decisions over injected measurements -------------------------------


def _timing(p50: float, rounds: list[float] | None = None) -> Timing:
    return Timing(p50_ms=p50, p95_ms=p50, runs=15, round_ms=tuple(rounds or []))


@pytest.mark.parametrize(
    ("fp32", "cand", "accepted"),
    [(0.085, 0.051, True), (0.085, 0.28, False), (0.085, 0.085, False), (0.085, 0.0849, True)],
)
def test_gate_rejects_anything_not_faster(fp32: float, cand: float, accepted: bool) -> None:
    verdict = gate(_timing(fp32), _timing(cand))
    assert verdict.accepted is accepted
    assert verdict.speedup == pytest.approx(fp32 / cand)
    if not accepted:
        assert "slower than fp32" in verdict.reason
    else:
        assert "no noise check" in verdict.reason  # no rounds: the point estimate, said so


def test_gate_min_speedup() -> None:
    assert not gate(_timing(0.1), _timing(0.095), min_speedup=1.1).accepted
    assert "below the required 1.10x" in gate(_timing(0.1), _timing(0.095), min_speedup=1.1).reason
    assert gate(_timing(0.1), _timing(0.05), min_speedup=1.1).accepted


def test_gate_rejects_a_win_inside_the_noise() -> None:
    """1.01x overall, but the paired rounds swing both ways: noise, not speed (the picodet fp16
    chosen at 1.00x of the last session)."""
    rng = np.random.default_rng(7)
    fp32_rounds = list(10.0 + rng.normal(0, 0.4, 15))
    noisy = [f / r for f, r in zip(fp32_rounds, 1.01 + rng.normal(0, 0.04, 15), strict=True)]
    verdict = gate(_timing(10.0, fp32_rounds), _timing(10.0 / 1.01, noisy))
    assert not verdict.accepted
    assert "not faster beyond noise" in verdict.reason and "15 paired rounds" in verdict.reason
    steady = [f / 1.3 for f in fp32_rounds]
    verdict = gate(_timing(10.0, fp32_rounds), _timing(10.0 / 1.3, steady))
    assert verdict.accepted and "CI 1.30-1.30x" in verdict.reason


def test_median_interval_is_the_binomial_order_statistics() -> None:
    assert median_interval([1.0] * 5) is None  # n < 6: no 95 % interval exists
    # n = 15: P(Bin(15, .5) <= 3) = 0.0176 <= 0.025 < P(<= 4) = 0.059 → 4th and 12th values.
    assert median_interval([float(i) for i in range(1, 16)]) == (4.0, 12.0)
    assert median_interval([float(i) for i in range(6, 0, -1)]) == (1.0, 6.0)


def test_choose_confirmed_drops_a_win_that_only_exists_interleaved() -> None:
    class Fixed:
        def __init__(self, ms: float) -> None:
            self.ms = ms

        def run(self, _outputs: object, _feed: object) -> None:
            end = time.perf_counter() + self.ms / 1000
            while time.perf_counter() < end:
                pass

    sessions = {"fp32": Fixed(2.0), "fast": Fixed(0.5), "fake": Fixed(3.0)}
    latencies = {"fp32": 2.0, "fake": 0.1, "fast": 0.5}  # "fake" won only interleaved
    chosen, refused = choose_confirmed(
        sessions, {}, latencies, {"fake", "fast"}, baseline="fp32", warmup=1, runs=5
    )
    assert chosen == "fast"
    assert set(refused) == {"fake"} and "faster only when interleaved" in refused["fake"]


def test_choose_takes_the_fastest_accepted_only() -> None:
    latencies = {"fp32": 0.085, "qop": 0.051, "qdq": 0.053, "dyn": 0.28, "fast-but-bad": 0.01}
    assert choose(latencies, {"qop", "qdq", "dyn"}) == "qop"
    assert choose(latencies, {"qdq"}) == "qdq"
    assert choose(latencies, set()) is None


def test_benchmark_interleaves_and_counts_every_run() -> None:
    calls: list[str] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, _outputs: object, _feed: object) -> None:
            calls.append(self.name)

    timings = benchmark(
        {"a": Fake("a"), "b": Fake("b")}, {"x": 1}, warmup=2, rounds=4, runs_per_round=3
    )
    assert set(timings) == {"a", "b"} and all(isinstance(t, Timing) for t in timings.values())
    assert all(t.runs == 12 for t in timings.values())
    timed = calls[4:]
    # Rounds alternate which model goes first.
    assert timed[:3] == ["a"] * 3 and timed[6:9] == ["b"] * 3


# -- candidates -------------------------------------------------------------------------------


def _names(plan_configs: list[StaticInt8 | DynamicInt8 | Fp16]) -> list[str]:
    return [config_name(c) for c in plan_configs]


def test_plan_on_x86_with_vnni() -> None:
    plan = plan_candidates(
        CNN, mode="auto", target=X86_VNNI, per_channel_ok=True, fp16_problem=None,
    )  # fmt: skip
    assert _names(plan.configs) == [
        "int8-qdq-s8s8-pc-minmax",
        "int8-qdq-s8s8-pt-minmax",
        "int8-qoperator-u8s8-pc-minmax",
        "int8-qoperator-u8s8-pt-minmax",
        "fp16",
    ]
    assert "ConvInteger" in plan.skipped["int8-dynamic"]


def test_plan_reduce_range_without_vnni_and_s8s8_qdq_on_arm() -> None:
    old = plan_candidates(
        CNN, mode="int8", target=X86_OLD, per_channel_ok=True, fp16_problem=None,
    )  # fmt: skip
    qop = [c for c in old.configs if isinstance(c, StaticInt8) and c.format == "qoperator"]
    assert qop and all(c.reduce_range and c.activation == "uint8" for c in qop)
    # Entropy/percentile are tried by the pipeline only when MinMax misses the budget.
    assert all(c.method == "minmax" for c in old.configs if isinstance(c, StaticInt8))
    assert not any(isinstance(c, Fp16) for c in old.configs)  # --quantize int8
    arm = plan_candidates(
        CNN, mode="auto", target=ARM, per_channel_ok=False, fp16_problem="no fp16 here",
    )  # fmt: skip
    assert _names(arm.configs) == [
        "int8-qdq-s8s8-pt-minmax",
        "int8-qoperator-u8s8-pt-minmax",
    ]
    assert arm.skipped["fp16"] == "no fp16 here" and "int8-per-channel" in arm.skipped


def test_plan_dynamic_only_for_matmul_graphs_and_nothing_for_ml_ops() -> None:
    mlp = plan_candidates(
        MLP, mode="int8", target=X86_VNNI, per_channel_ok=True, fp16_problem=None,
    )  # fmt: skip
    assert any(isinstance(c, DynamicInt8) for c in mlp.configs)
    trees = plan_candidates(
        OpMix(0, 0, 3, 3), mode="auto", target=X86_VNNI, per_channel_ok=True, fp16_problem=None,
    )  # fmt: skip
    assert trees.configs == [] and "ai.onnx.ml" in trees.skipped["int8"]
    plain = plan_candidates(
        OpMix(0, 0, 0, 3), mode="int8", target=X86_VNNI, per_channel_ok=True, fp16_problem=None,
    )  # fmt: skip
    assert plain.configs == [] and "no Conv/MatMul/Gemm" in plain.skipped["int8"]
    assert plan_candidates(
        CNN, mode="none", target=X86_VNNI, per_channel_ok=True, fp16_problem=None,
    ).configs == []  # fmt: skip


def test_op_mix_counts() -> None:
    mix = op_mix(fragile_onnx())
    assert (mix.convs, mix.matmuls, mix.ml_ops, mix.total) == (0, 2, 0, 5)


# -- configs and dispatch ---------------------------------------------------------------------


def test_every_config_type_has_an_engine_and_configs_are_strict() -> None:
    union = get_args(get_args(QuantConfig)[0])
    assert set(union) == set(ENGINES) == {StaticInt8, DynamicInt8, Fp16}
    with pytest.raises(ValueError, match="extra"):
        StaticInt8(format="qdq", per_channel=True, activation="int8", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        StaticInt8(format="qlinear", per_channel=True, activation="int8")  # type: ignore[arg-type]


def test_config_names_precision_and_record() -> None:
    cfg = StaticInt8(format="qdq", per_channel=True, activation="int8", excluded_nodes=("a", "b"))
    assert config_name(cfg) == "int8-qdq-s8s8-pc-minmax-x2"
    assert precision_of(cfg) == "mixed"
    assert precision_of(cfg.model_copy(update={"excluded_nodes": ()})) == "int8"
    assert precision_of(Fp16()) == "fp16" and precision_of(None) == "fp32"
    assert config_name(DynamicInt8(reduce_range=True)) == "int8-dynamic-s8-pt-rr"
    record = config_record(cfg)
    assert record["quant.kind"] == "static_int8" and record["quant.excluded"] == "a,b"
    assert record["quant.excluded_nodes"] == 2 and record["quant.per_channel"] is True
    assert config_record(None) == {"quant.kind": "fp32"}


# -- ranking ----------------------------------------------------------------------------------


def test_fake_quant_error_sees_an_outlier_channel() -> None:
    rng = np.random.default_rng(0)
    calm = rng.standard_normal((64, 8))
    assert fake_quant_error(calm) < 0.02
    spiky = calm.copy()
    spiky[:, 0] *= 1e4
    assert fake_quant_error(spiky) > 0.5
    assert fake_quant_error(np.zeros((4, 4))) == 0.0


def test_rank_tensors_puts_the_outlier_first_with_its_producer_and_consumers() -> None:
    rng = np.random.default_rng(0)
    risks = rank_tensors(
        fragile_onnx(), {"x": rng.standard_normal((32, 16)).astype(np.float32)},
        op_types=("MatMul", "Add", "Relu", "Mul"),
    )  # fmt: skip
    assert risks[0].tensor == "h2" and set(risks[0].nodes) == {"outlier", "fc2"}
    assert {r.tensor for r in risks} >= {"x", "m1", "a1", "h", "h2", "scores"}


# -- calibration readers ----------------------------------------------------------------------

SPEC_28 = TensorSpec(name="input", shape=["batch", 1, 28, 28], dtype="float32")
GRAY_28 = Preprocessing(color="gray", resize=ResizeSpec(width=28, height=28), layout="nchw")


def test_npz_calibration_streams_in_bounded_batches(tmp_path: Path) -> None:
    x = np.arange(100 * 3, dtype=np.float64).reshape(100, 3)
    path = write_npz(tmp_path / "c.npz", x=x, y=np.arange(100) % 4)
    spec = TensorSpec(name="input", shape=["batch", 3], dtype="float32")
    calib = open_calibration(path, inputs=[spec], preprocessing=None, batch_rows=16)
    assert (calib.samples, calib.kind, calib.has_labels) == (100, "npz", True)
    batches = list(calib.batches())
    assert max(len(b.inputs["input"]) for b in batches) == 16
    assert np.array_equal(np.concatenate([b.inputs["input"] for b in batches]), x)
    assert all(b.inputs["input"].dtype == np.float32 for b in batches)
    assert np.array_equal(np.concatenate([b.labels for b in batches]), np.arange(100) % 4)
    assert sum(len(b.inputs["input"]) for b in calib.batches(limit=37)) == 37
    reader = calib.reader(limit=5)
    rows = [reader.get_next() for _ in range(6)]
    assert rows[-1] is None and all(r["input"].shape == (1, 3) for r in rows[:5])
    reader.rewind()
    assert reader.get_next() is not None
    assert peek_row_shape(path, preprocessing=None) == [3]


def test_image_folder_tree_gives_labels_and_matches_the_recipe(tmp_path: Path) -> None:
    x, y = digits_28()
    folder = image_tree(tmp_path / "imgs", x[:30], y[:30])
    calib = open_calibration(
        folder, inputs=[SPEC_28], preprocessing=GRAY_28, labels=[str(i) for i in range(10)],
        batch_rows=8,
    )  # fmt: skip
    assert (calib.kind, calib.samples, calib.has_labels) == ("images", 30, True)
    batches = list(calib.batches())
    images = np.concatenate([b.inputs["input"] for b in batches])
    labels = np.concatenate([b.labels for b in batches])
    assert images.shape == (30, 1, 28, 28) and images.dtype == np.float32
    order = np.argsort(y[:30], kind="stable")  # files are read class by class
    assert np.array_equal(labels, y[:30][order])
    assert np.abs(images - x[:30][order]).max() <= 1 / 255 + 1e-6
    assert len(calib.sha256) == 64
    assert peek_row_shape(folder, preprocessing=GRAY_28) == [1, 28, 28]


def test_image_folder_needs_preprocessing_and_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="needs --preprocessing"):
        open_calibration(tmp_path / "empty", inputs=[SPEC_28], preprocessing=None)
    with pytest.raises(InputError, match="0 rows"):
        open_calibration(tmp_path / "empty", inputs=[SPEC_28], preprocessing=GRAY_28)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a decodable image"):
        open_calibration(tmp_path / "bad", inputs=[SPEC_28], preprocessing=GRAY_28)
    with pytest.raises(InputError, match="no such file"):
        open_calibration(tmp_path / "missing.npz", inputs=[SPEC_28], preprocessing=None)
    with pytest.raises(InputError, match="lacks array 'x'"):
        open_calibration(
            write_npz(tmp_path / "y.npz", y=np.zeros(3)), inputs=[SPEC_28], preprocessing=None
        )
