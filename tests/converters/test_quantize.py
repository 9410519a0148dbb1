"""End-to-end quantization through ``converters.api.convert``: CNN, old opsets, the budget loop,
bad calibration data. Assertions are on the report's own numbers, never on wall-clock time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from converters.api import convert
from converters.errors import ConvertError, InputError
from converters.options import ConvertOptions
from converters.quantize.report import QuantizationReport
from edgefleet.artifact import hash_file, load_artifact
from tests.converters.conftest import CnnSetup
from tests.converters.factories import (
    conv_onnx,
    fragile_onnx,
    leftovers,
    save_onnx,
    write_npz,
)

QUICK: dict[str, Any] = {
    "latency_warmup": 3,
    "latency_runs": 20,
    "gate_rounds": 6,
    "gate_runs_per_round": 10,
}


def _never_slower(report: QuantizationReport) -> None:
    """The chosen candidate was measured no slower than fp32 (or is fp32 itself)."""
    fp32 = report.candidates[0]
    chosen = next(c for c in report.candidates if c.name == report.chosen)
    assert [c.name for c in report.candidates if c.status == "chosen"] == [report.chosen]
    if chosen.name != "fp32":
        assert chosen.latency_ms_p50 is not None and fp32.latency_ms_p50 is not None
        assert chosen.latency_ms_p50 < fp32.latency_ms_p50
        assert chosen.drop is not None and chosen.drop <= report.max_drop
    for c in report.candidates[1:]:
        if c.latency_ms_p50 is not None and fp32.latency_ms_p50 is not None:
            if c.latency_ms_p50 >= fp32.latency_ms_p50:
                assert c.status == "rejected" and "slower than fp32" in c.reason


def test_cnn_auto_quantizes_to_int8(cnn_setup: CnnSetup, tmp_path: Path) -> None:
    out = tmp_path / "cnn"
    result = convert(
        cnn_setup.torchscript,
        out,
        ConvertOptions(
            **QUICK,
            task="classification",
            calibration=cnn_setup.calib_npz,
            eval_data=cnn_setup.eval_npz,
            quantize="auto",
        ),
    )
    report = result.report.quantization
    assert report is not None and report.metric == "top1" and report.eval_source == "eval"
    fp32, chosen = (
        report.candidates[0],
        next(c for c in report.candidates if c.name == report.chosen),
    )
    assert fp32.name == "fp32" and fp32.metric is not None and fp32.metric > 0.8
    # Issue 3's bar on quality and size holds for every static int8 candidate (deterministic):
    # within 0.5 point top-1 of fp32 and >= 3x smaller.
    # Every planned static variant is in the report; the ones the latency probe kept were
    # validated, the others say why not (slower than fp32, or than one already accepted).
    static = [c for c in report.candidates if c.config.get("kind") == "static_int8"]
    assert len(static) >= 4
    for c in static:
        assert c.probe_speedup is not None, c
        if c.metric is None:
            assert c.status in ("rejected", "pruned"), c
            assert "latency probe" in c.reason or "cannot win" in c.reason, c
            continue
        assert c.metric >= fp32.metric - 0.005, c
        assert c.size_ratio is not None and c.size_ratio >= 3.0, c
    # Speed is measured, not assumed: the choice follows the gate's numbers.
    _never_slower(report)
    faster = {
        c.name: c.latency_ms_p50
        for c in report.candidates[1:]
        if c.latency_ms_p50 is not None and c.status in ("accepted", "chosen")
    }
    if faster:
        assert report.chosen == min(faster, key=lambda name: faster[name])
        assert result.manifest.precision == "int8" or chosen.config["kind"] == "fp16"
    else:
        assert report.chosen == "fp32" and result.manifest.precision == "fp32"
    if chosen.config.get("kind") == "static_int8":
        model_size = (out / "model.onnx").stat().st_size
        assert fp32.size_bytes is not None and fp32.size_bytes / model_size >= 3.0
    assert all("opset" not in step for step in report.normalisation)
    assert any(s.startswith("fixed input[0]=1") for s in report.normalisation)

    manifest = load_artifact(out)
    assert manifest.build.calibration_sha256 == hash_file(cnn_setup.calib_npz)[0]
    assert manifest.build.config["quant.chosen"] == report.chosen
    assert manifest.build.config["quant.kind"] == (chosen.config.get("kind") or "fp32")
    assert manifest.metrics.top1 == pytest.approx(chosen.metric)
    assert manifest.source.framework == "pytorch"
    stats = manifest.reference_stats
    assert stats is not None and stats.samples == 256 and len(stats.channel_mean) == 1
    assert stats.channel_mean[0] == pytest.approx(float(np.load(cnn_setup.calib_npz)["x"].mean()))
    assert len(stats.output_distribution) == 10
    assert sum(stats.output_distribution) == pytest.approx(1.0)

    # The self-test passes on the shipped model; an int8 model really holds int8 weights.
    graph = onnx.load(str(out / "model.onnx")).graph
    if result.manifest.precision == "int8":
        assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with np.load(out / "selftest.npz") as st:
        got = session.run(None, {"input": st["input/input"]})[0]
        assert np.allclose(got, st["output/output"], atol=manifest.self_test.atol)  # type: ignore[union-attr]
    # Every candidate is in report.json with its verdict and numbers.
    names = [c.name for c in report.candidates]
    assert len(names) == len(set(names)) >= 5
    assert all(c.reason for c in report.candidates)


def test_old_opset_conv_is_upgraded_and_quantized_per_channel(tmp_path: Path) -> None:
    source = save_onnx(conv_onnx(opset=11), tmp_path / "old.onnx")
    rng = np.random.default_rng(1)
    calib = write_npz(tmp_path / "calib.npz", x=rng.random((64, 3, 16, 16), dtype=np.float32))
    result = convert(
        source,
        tmp_path / "out",
        ConvertOptions(**QUICK, calibration=calib, calibration_methods=["minmax"]),
    )
    report = result.report.quantization
    assert report is not None and report.eval_source == "calibration"
    assert report.metric == "argmax_agreement"
    assert "opset 11→17" in report.normalisation
    per_channel = [c for c in report.candidates if c.config.get("per_channel")]
    assert per_channel and all(c.status != "failed" for c in per_channel), per_channel
    # Each was built and ran: validated, or at least timed by the latency probe (which drops
    # one not faster than fp32 here before validating it).
    assert all(c.metric is not None or c.probe_speedup is not None for c in per_channel)
    _never_slower(report)
    shipped = onnx.load(str(tmp_path / "out" / "model.onnx"))
    opset = max(o.version for o in shipped.opset_import if o.domain in ("", "ai.onnx"))
    # A quantized candidate is built on the upgraded graph; fp32 ships as given (the upgrade
    # made a real detector slower, issue #12).
    assert opset >= 13 if report.chosen != "fp32" else opset == 11


def _fragile_setup(tmp_path: Path) -> tuple[Path, Path]:
    source = save_onnx(fragile_onnx(), tmp_path / "fragile.onnx")
    rng = np.random.default_rng(2)
    calib = write_npz(tmp_path / "calib.npz", x=rng.standard_normal((128, 16)).astype(np.float32))
    return source, calib


def test_budget_loop_spares_the_outlier_tensor(tmp_path: Path) -> None:
    source, calib = _fragile_setup(tmp_path)
    result = convert(
        source,
        tmp_path / "out",
        ConvertOptions(
            **QUICK,
            calibration=calib,
            calibration_methods=["minmax"],
            max_exclusion_steps=3,
            # The budget loop is what is tested: validate even candidates the latency probe
            # would drop (int8 of this 16-wide MLP is not faster than fp32).
            latency_probe=False,
        ),
    )
    report = result.report.quantization
    assert report is not None
    looped = [c for c in report.candidates if c.budget_steps]
    assert looped, [(c.name, c.drop) for c in report.candidates]
    for c in looped:
        assert c.budget_steps[0].excluded_tensor == "h2"
        assert {"outlier", "fc2"} <= set(c.budget_steps[0].excluded_nodes)
        assert c.drop is not None and c.drop <= report.max_drop
        assert c.excluded_nodes == c.budget_steps[-1].excluded_nodes
        assert c.name.endswith(f"-x{len(c.excluded_nodes)}")
    _never_slower(report)
    # Which candidate ships is decided by measured latency (fp16 can win on a busy machine);
    # when it is one of the budget loop's, the manifest says mixed precision.
    if report.chosen in {c.name for c in looped}:
        assert result.manifest.precision == "mixed"
        assert result.manifest.build.config["quant.excluded_nodes"] >= 2


def test_budget_no_candidate_meets(tmp_path: Path) -> None:
    source, calib = _fragile_setup(tmp_path)
    strict = {**QUICK, "calibration": calib, "calibration_methods": ["minmax"]}
    # --quantize int8: one clear line, exit 1, nothing written.
    with pytest.raises(ConvertError, match="no candidate is within --max-drop") as err:
        convert(
            source,
            tmp_path / "int8",
            ConvertOptions(**strict, quantize="int8", max_exclusion_steps=0),
        )
    assert err.value.exit_code == 1 and "\n" not in str(err.value)
    assert leftovers(tmp_path, "int8") == []
    # --quantize auto: fp32 ships, and the report says why.
    result = convert(
        source, tmp_path / "auto", ConvertOptions(**strict, quantize="auto", max_exclusion_steps=0)
    )
    report = result.report.quantization
    assert report is not None and report.chosen == "fp32"
    assert result.manifest.precision == "fp32"
    assert "no candidate qualified" in report.candidates[0].reason
    assert all(c.status in ("rejected", "failed") for c in report.candidates[1:])


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((10, 8), np.float32), "dimension 1 is 8; the input needs 16"),
        (np.zeros((10, 16), np.complex64), "not a number type"),
        (np.zeros((0, 16), np.float32), "empty (0 rows)"),
        (np.zeros((10, 16, 1), np.float32), "has shape [10, 16, 1]"),
    ],
)
def test_bad_calibration_data(x: np.ndarray, message: str, tmp_path: Path) -> None:
    source, _ = _fragile_setup(tmp_path)
    calib = write_npz(tmp_path / "bad.npz", x=x)
    with pytest.raises(InputError) as err:
        convert(source, tmp_path / "out", ConvertOptions(**QUICK, calibration=calib))
    assert message in str(err.value) and err.value.exit_code == 2
    assert leftovers(tmp_path, "out") == []


def test_quantize_needs_calibration_and_a_known_target(tmp_path: Path) -> None:
    source, calib = _fragile_setup(tmp_path)
    with pytest.raises(InputError, match="needs --calibration"):
        convert(source, tmp_path / "o", ConvertOptions(**QUICK, quantize="int8"))
    with pytest.raises(InputError, match="--target"):
        convert(source, tmp_path / "o", ConvertOptions(**QUICK, calibration=calib, target="nope"))
    assert leftovers(tmp_path, "o") == []


def test_tree_models_are_never_quantized(tmp_path: Path, digits_setup: Any) -> None:
    calib = write_npz(tmp_path / "calib.npz", x=digits_setup.x_eval[:64])
    result = convert(
        digits_setup.models["forest"].path,
        tmp_path / "forest",
        ConvertOptions(**QUICK, calibration=calib, eval_data=digits_setup.eval_npz),
    )
    report = result.report.quantization
    assert report is not None and report.chosen == "fp32"
    assert [c.name for c in report.candidates] == ["fp32"]
    assert "ai.onnx.ml" in report.skipped["int8"]
    assert result.manifest.precision == "fp32"


def test_cnn_calibrated_from_a_class_folder_tree(cnn_setup: CnnSetup, tmp_path: Path) -> None:
    """Images preprocessed by the manifest's recipe; sub-folders give the labels for top-1."""
    from edgefleet.contract import Preprocessing
    from edgefleet.contract.manifest import ResizeSpec
    from tests.converters.factories import image_tree

    folder = image_tree(tmp_path / "imgs", cnn_setup.x_eval[:120], cnn_setup.y_eval[:120])
    pre = Preprocessing(color="gray", resize=ResizeSpec(width=28, height=28), layout="nchw")
    result = convert(
        cnn_setup.torchscript,
        tmp_path / "out",
        ConvertOptions(
            **QUICK,
            task="classification",
            labels=[str(i) for i in range(10)],
            preprocessing=pre,
            calibration=folder,
            calibration_methods=["minmax"],
        ),
    )
    report = result.report.quantization
    assert report is not None
    assert (report.calibration_kind, report.eval_source, report.metric) == (
        "images",
        "calibration",
        "top1",
    )
    assert report.eval_rows == 120 and report.baseline_metric > 0.7
    assert result.manifest.preprocessing == pre
    assert result.manifest.labels == [str(i) for i in range(10)]
    assert result.manifest.build.calibration_sha256 == report.calibration_sha256
    stats = result.manifest.reference_stats
    assert stats is not None and stats.samples == 120
    _never_slower(report)
