"""The TFLite accuracy-budget loop: LiteRT's quantization debugger ranks the layers, the worst
stay float (its denylist) until the int8 drop is within --max-drop.

The model is a small digits MLP with one outlier channel: per-tensor int8 activations make full
int8 useless on it, and sparing one layer (and its reader) brings it back. Skipped without
TensorFlow (the convert-tf extra)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.api import convert
from converters.errors import ConvertError
from converters.options import ConvertOptions
from tests.converters.factories import digits, write_npz

QUICK: dict[str, Any] = {
    "latency_warmup": 2,
    "latency_runs": 10,
    "gate_rounds": 3,
    "gate_runs_per_round": 5,
    "task": "classification",
    "calibration_rows": 96,
}


@dataclass(frozen=True)
class Fragile:
    model: Any
    path: Path
    calib: Path
    eval_npz: Path


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> Fragile:
    """Digits MLP 64 → 32 → 32 → 32 → 10 whose second hidden layer has channel 0 scaled by
    1e4 (and read by nothing): fp32 does not change, int8's range for that tensor does."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow", reason="Keras sources need the convert-tf extra")
    pytest.importorskip("ai_edge_litert", reason="TFLite validation needs LiteRT")
    x, y = digits()
    x = x / 16.0
    tf.random.set_seed(0)
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            tf.keras.Input((64,)),
            layers.Dense(32, activation="relu", name="first"),
            layers.Dense(32, activation="relu", name="outlier"),
            layers.Dense(32, activation="relu"),
            layers.Dense(10),
        ]
    )
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1400], y[:1400], epochs=4, verbose=0)
    kernel, bias = model.layers[1].get_weights()
    kernel[:, 0] *= 1e4
    bias[0] = bias[0] * 1e4 + 1e4
    model.layers[1].set_weights([kernel, bias])
    kernel, bias = model.layers[2].get_weights()
    kernel[0, :] = 0.0
    model.layers[2].set_weights([kernel, bias])
    work = tmp_path_factory.mktemp("fragile-keras")
    model.save(work / "fragile.keras")
    calib = write_npz(work / "calib.npz", x=x[:128], y=y[:128])
    eval_npz = write_npz(work / "eval.npz", x=x[1400:1700], y=y[1400:1700])
    return Fragile(model, work / "fragile.keras", calib, eval_npz)


def test_budget_loop_keeps_the_worst_layers_float(
    fragile: Fragile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = convert(
        fragile.path,
        tmp_path / "out",
        ConvertOptions(
            **QUICK,
            calibration=fragile.calib,
            eval_data=fragile.eval_npz,
            max_drop=0.02,
            progress=True,
            verbose=True,
        ),
    )
    err = capsys.readouterr().err
    assert "int8-full: top1 drop" in err and "keeping the worst layers float" in err
    assert "  budget loop: int8-mixed-x" in err  # per-layer lines: --verbose
    assert "TFLite budget loop: " in err and "FULLY_CONNECTED x2 kept float" in err
    report = result.report.quantization
    assert report is not None and report.metric == "top1"
    by_name = {c.name: c for c in report.candidates}
    mixed = [c for c in report.candidates if c.name.startswith("int8-mixed-x")]
    assert len(mixed) == 1, [(c.name, c.drop, c.reason) for c in report.candidates]
    int8 = mixed[0]
    assert "int8-full" not in by_name  # the looped candidate replaced it
    steps = int8.budget_steps
    # Full int8 was far over budget: the loop was needed, and brought it within.
    assert steps and all(s.drop is not None for s in steps)
    assert int8.drop is not None and int8.drop <= 0.02
    assert any(s.drop > 0.3 for s in steps if s.drop is not None) or steps[0].drop == int8.drop
    final = [s for s in steps if s.excluded_nodes == int8.excluded_nodes]
    assert final and final[-1].drop == pytest.approx(int8.drop)
    assert int8.name == f"int8-mixed-x{len(int8.excluded_nodes)}"
    # Exactly the outlier layer and its reader stayed float (pruning undid any step that was
    # not needed); the first layer and the output layer stayed int8.
    # (Keras names a reloaded layer "outlier_1".)
    assert len(int8.excluded_nodes) == 2, int8.excluded_nodes
    assert any(re.search(r"/outlier(_\d+)?/", n) for n in int8.excluded_nodes), int8.excluded_nodes
    assert not any(re.search(r"/first(_\d+)?/", n) for n in int8.excluded_nodes)
    assert int8.float_ops == ["FULLY_CONNECTED"] * len(int8.excluded_nodes)
    assert int8.status in ("accepted", "chosen") or "latency gate" in int8.reason
    if report.chosen == int8.name:
        assert result.manifest.precision == "mixed"
        assert result.manifest.build.config["quant.denylisted_nodes"] == len(int8.excluded_nodes)


def test_without_the_loop_full_int8_is_over_budget(fragile: Fragile, tmp_path: Path) -> None:
    """The same model and budget with no denylist steps: --quantize int8 has nothing to ship."""
    options = ConvertOptions(
        **QUICK,
        calibration=fragile.calib,
        eval_data=fragile.eval_npz,
        max_drop=0.02,
        quantize="int8",
        max_exclusion_steps=0,
    )
    with pytest.raises(
        ConvertError, match=r"int8-full: top1 drop 0\.[1-9]\d* exceeds budget 0\.02"
    ):
        convert(fragile.path, tmp_path / "int8", options)


def test_denylisted_config_rebuilds_a_mixed_model(fragile: Fragile) -> None:
    """The config in report.json is enough to rebuild the model: the denylisted ops are float."""
    from converters.calibration import open_calibration
    from converters.tflite.candidates import TfliteConfig, convert_keras
    from converters.tflite.denylist import DebugSession
    from converters.tflite.runner import TfliteRunner

    fp32 = TfliteRunner(convert_keras(fragile.model, TfliteConfig(kind="tflite_fp32"), None))
    calib = open_calibration(fragile.calib, inputs=fp32.specs()[0], preprocessing=None)
    ranking = DebugSession(fragile.model, calib, rows=64).ranking()
    assert ranking and ranking[0].error >= ranking[-1].error
    worst = next(r for r in ranking if re.search(r"/outlier(_\d+)?/", r.tensor))
    assert len(worst.nodes) == 2  # the layer and the layer that reads it
    config = TfliteConfig(kind="tflite_int8", representative_rows=64, denylisted_nodes=worst.nodes)
    runner = TfliteRunner(convert_keras(fragile.model, config, calib))
    assert runner.precision() == "int8" and config.precision == "mixed"
    kinds = [np.dtype(t["dtype"]).name for t in runner.interpreter.get_tensor_details()]
    assert "float32" in kinds and "int8" in kinds
    x = np.load(fragile.eval_npz)["x"][:200].astype(np.float32)
    want = fp32.predict({fp32.inputs[0]["name"]: x})
    got = runner.predict({runner.inputs[0]["name"]: x})
    agreement = np.mean(next(iter(got.values())).argmax(1) == next(iter(want.values())).argmax(1))
    assert agreement > 0.95


def test_denylist_is_int8_only() -> None:
    from pydantic import ValidationError

    from converters.tflite.candidates import TfliteConfig
    from converters.tflite.denylist import float_name

    with pytest.raises(ValidationError, match="tflite_int8 only"):
        TfliteConfig(kind="tflite_fp16", denylisted_nodes=("a",))
    assert float_name("model/dense_1/BiasAdd1") == "model/dense_1/BiasAdd"
    assert float_name("StatefulPartitionedCall_1:02") == "StatefulPartitionedCall_1:0"
    assert float_name("tfl.quantize") == "tfl.quantize"
