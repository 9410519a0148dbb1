"""Keras → TFLite (fp32/fp16/full-int8 candidates) and existing .tflite files, run with LiteRT.

Skipped without TensorFlow (the convert-tf extra); kept few because TF is slow to import."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.api import convert
from converters.errors import InputError
from converters.options import ConvertOptions
from edgefleet.artifact import load_artifact
from tests.converters.factories import convert_without, digits_28, leftovers, write_npz

QUICK: dict[str, Any] = {
    "latency_warmup": 3,
    "latency_runs": 20,
    "gate_rounds": 4,
    "gate_runs_per_round": 10,
    "task": "classification",
}


@dataclass(frozen=True)
class KerasSetup:
    model: Any
    path: Path
    calib: Path
    eval_npz: Path
    work: Path


@pytest.fixture(scope="module")
def keras_setup(tmp_path_factory: pytest.TempPathFactory) -> KerasSetup:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow", reason="Keras sources need the convert-tf extra")
    pytest.importorskip("ai_edge_litert", reason="TFLite validation needs LiteRT")
    x, y = digits_28()
    x = np.transpose(x, (0, 2, 3, 1))  # Keras is NHWC
    tf.random.set_seed(0)
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            tf.keras.Input((28, 28, 1)),
            layers.Conv2D(8, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1400], y[:1400], epochs=2, verbose=0)
    work = tmp_path_factory.mktemp("keras")
    model.save(work / "digits.keras")
    calib = write_npz(work / "calib.npz", x=x[:128], y=y[:128])
    eval_npz = write_npz(work / "eval.npz", x=x[1400:], y=y[1400:])
    return KerasSetup(model, work / "digits.keras", calib, eval_npz, work)


def test_keras_auto_builds_fp16_and_full_int8_candidates(
    keras_setup: KerasSetup, tmp_path: Path
) -> None:
    out = tmp_path / "k"
    result = convert(
        keras_setup.path,
        out,
        ConvertOptions(**QUICK, calibration=keras_setup.calib, eval_data=keras_setup.eval_npz),
    )
    manifest = load_artifact(out)
    assert (manifest.format, manifest.model_file) == ("tflite", "model.tflite")
    assert manifest.source.framework == "keras"
    report = result.report.quantization
    assert report is not None and report.metric == "top1"
    by_name = {c.name: c for c in report.candidates}
    assert set(by_name) == {"fp32", "fp16", "int8-full"}
    int8 = by_name["int8-full"]
    assert int8.status != "failed" and int8.metric is not None and int8.metric > 0.5
    assert int8.size_ratio is not None and int8.size_ratio > 2.0
    chosen = by_name[report.chosen]
    assert chosen.status == "chosen"
    if report.chosen != "fp32":
        assert chosen.latency_ms_p50 is not None and by_name["fp32"].latency_ms_p50 is not None
        assert chosen.latency_ms_p50 < by_name["fp32"].latency_ms_p50
    for c in report.candidates[1:]:
        if c.latency_ms_p50 is not None and c.speedup is not None and c.speedup <= 1.0:
            assert c.status == "rejected"
    assert (
        manifest.precision == {"fp32": "fp32", "fp16": "fp16", "int8-full": "int8"}[report.chosen]
    )
    assert manifest.build.calibration_sha256 is not None
    assert {c.name: c.passed for c in result.report.checks} == {"fidelity": True, "top1": True}


def test_existing_full_int8_tflite_is_wrapped_with_quantization_params(
    keras_setup: KerasSetup, tmp_path: Path
) -> None:
    from converters.calibration import open_calibration
    from converters.tflite.candidates import TfliteConfig, convert_keras
    from converters.tflite.runner import TfliteRunner

    spec = TfliteRunner(
        convert_keras(keras_setup.model, TfliteConfig(kind="tflite_fp32"), None)
    ).specs()[0]
    calib = open_calibration(keras_setup.calib, inputs=spec, preprocessing=None)
    data = convert_keras(keras_setup.model, TfliteConfig(kind="tflite_int8"), calib)
    source = tmp_path / "int8.tflite"
    source.write_bytes(data)
    result = convert(
        source, tmp_path / "w", ConvertOptions(**QUICK, eval_data=keras_setup.eval_npz)
    )
    manifest = result.manifest
    assert manifest.source.framework == "tflite" and manifest.precision == "int8"
    (tensor,) = manifest.inputs
    assert tensor.dtype == "int8" and tensor.quantization is not None
    assert tensor.quantization.scale[0] > 0
    assert manifest.outputs[0].dtype == "int8"
    with np.load(tmp_path / "w" / "selftest.npz") as st:
        assert st[f"input/{tensor.name}"].dtype == np.int8
    top1 = manifest.metrics.top1
    assert top1 is not None and top1 > 0.5
    with pytest.raises(InputError, match="wrapped as is"):
        convert(
            source,
            tmp_path / "q",
            ConvertOptions(**QUICK, calibration=keras_setup.calib, quantize="int8"),
        )
    assert leftovers(tmp_path, "q") == []


def test_saved_model_directory(keras_setup: KerasSetup, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    keras_setup.model.export(str(saved), verbose=False)
    result = convert(
        saved,
        tmp_path / "s",
        ConvertOptions(**QUICK, eval_data=keras_setup.eval_npz, calibration=keras_setup.calib),
    )
    manifest = load_artifact(tmp_path / "s")
    assert (manifest.format, manifest.source.framework) == ("tflite", "keras")
    assert {c.name: c.passed for c in result.report.checks} == {"fidelity": True, "top1": True}
    assert len(result.report.source.sha256) == 64 and result.report.source.size > 0
    report = result.report.quantization
    assert report is not None and {c.name for c in report.candidates} == {
        "fp32",
        "fp16",
        "int8-full",
    }


def test_format_must_match_the_source(tmp_path: Path) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    with pytest.raises(InputError, match="not a loadable Keras model"):
        convert(model, tmp_path / "o", ConvertOptions(format="onnx"))  # tf2onnx's road
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"x")
    with pytest.raises(InputError, match="is a TFLite model already"):
        convert(tflite, tmp_path / "o", ConvertOptions(format="onnx"))
    pickle = tmp_path / "m.pkl"
    pickle.write_bytes(b"x")
    with pytest.raises(InputError, match="converts to ONNX only"):
        convert(pickle, tmp_path / "o", ConvertOptions(format="tflite"))
    assert leftovers(tmp_path, "o") == []


def test_keras_and_saved_model_to_onnx_with_tf2onnx(
    keras_setup: KerasSetup, tmp_path: Path
) -> None:
    pytest.importorskip("tf2onnx", reason="Keras → ONNX needs tf2onnx (the convert-tf extra)")
    result = convert(
        keras_setup.path,
        tmp_path / "k",
        ConvertOptions(**QUICK, format="onnx", eval_data=keras_setup.eval_npz),
    )
    manifest = load_artifact(tmp_path / "k")
    assert (manifest.format, manifest.source.framework) == ("onnx", "keras")
    assert {c.name: c.passed for c in result.report.checks} == {"fidelity": True, "top1": True}
    assert "tf2onnx" in manifest.source.tools
    saved = tmp_path / "saved"
    keras_setup.model.export(str(saved), verbose=False)
    result = convert(
        saved,
        tmp_path / "s",
        ConvertOptions(**QUICK, format="onnx", eval_data=keras_setup.eval_npz),
    )
    assert load_artifact(tmp_path / "s").format == "onnx"
    assert all(c.passed for c in result.report.checks)
    assert result.report.source.size > 0 and len(result.report.source.sha256) == 64


@pytest.mark.integration
def test_missing_tensorflow_names_the_extra(tmp_path: Path) -> None:
    result = convert_without("tensorflow", "m.keras", tmp_path)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "pip install 'edgefleet[convert-tf]'" in lines[0]
    assert not (tmp_path / "o").exists()
