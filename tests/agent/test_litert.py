"""The LiteRT backend on real .tflite models: float, full-int8, NHWC images, batch 1 and N."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.datasets import load_digits

from agent.engine import BackendOptions, load_model
from agent.engine.litert import LiteRTSession
from agent.errors import InferenceError, ModelLoadError
from agent.state import Serving
from edgefleet.contract import Preprocessing
from edgefleet.contract.manifest import ResizeSpec
from tests.agent.factory import tflite_specs, write_artifact
from tests.agent.helpers import rehash
from tests.agent.media import sample_photo
from tests.utils.artifacts import digits_images

OPTIONS = BackendOptions(threads=2)


def _accuracy(model_dir: Path, rows: slice) -> tuple[float, int]:
    model = load_model(model_dir, options=OPTIONS)
    digits = load_digits()
    x = digits.data[rows].astype(np.float32)
    serving = Serving.of(model)
    pre = serving.preprocess
    feed = pre.from_npy(_npy(x)) if pre.quant is not None else x
    outputs = model.infer({pre.tensor.name: feed})
    top = model.top1(outputs)
    assert top is not None
    return float((top[0] == digits.target[rows]).mean()), len(top[0])


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_float_tflite_batch_n_then_batch_1(digits_tflite: Path) -> None:
    accuracy, n = _accuracy(digits_tflite, slice(1400, 1797))
    assert n == 397 and accuracy > 0.9
    model = load_model(digits_tflite, options=OPTIONS)
    name = model.manifest.inputs[0].name
    x = load_digits().data[1400:1403].astype(np.float32)
    many = model.infer({name: x})
    one = model.infer({name: x[:1]})  # resized back to batch 1
    key = model.manifest.outputs[0].name
    np.testing.assert_allclose(one[key][0], many[key][0], rtol=1e-5, atol=1e-6)


def test_int8_tflite_quantizes_inputs_and_dequantizes_scores(
    digits_tflite_int8: Path, tmp_path: Path
) -> None:
    accuracy, n = _accuracy(digits_tflite_int8, slice(1400, 1797))
    assert n == 397 and accuracy > 0.85
    model = load_model(digits_tflite_int8, options=OPTIONS)
    serving = Serving.of(model)
    assert serving.preprocess.quant is not None
    hits = 0
    paths = digits_images(tmp_path, 40)
    for path in paths:
        tensor = serving.preprocess(path.read_bytes())
        assert tensor.dtype == np.int8
        top = model.top1(model.infer({serving.preprocess.tensor.name: tensor}))
        assert top is not None and 0 <= top[1][0] <= 1
        hits += int(path.stem.endswith(f"label{top[0][0]}"))
    assert hits >= 34


def test_nhwc_image_model_against_keras_reference(tflite_dir: Path, tmp_path: Path) -> None:
    model_path = tflite_dir / "conv_fp32.tflite"
    inputs, outputs = tflite_specs(model_path)
    ref = np.load(tflite_dir / "conv_reference.npz")
    art = write_artifact(
        tmp_path / "conv",
        model_bytes=model_path.read_bytes(),
        fmt="tflite",
        inputs=inputs,
        outputs=outputs,
        preprocessing=Preprocessing(
            color="rgb", resize=ResizeSpec(width=32, height=32, mode="letterbox"), layout="nhwc"
        ),
        task="classification",
        labels=["a", "b", "c", "d"],
        self_test=({inputs[0].name: ref["input"]}, {outputs[0].name: ref["output"]}, 1e-5),
    )
    model = load_model(art, options=OPTIONS)
    serving = Serving.of(model)
    china = cv2.imread(str(sample_photo()))
    assert china is not None
    tensor, size = serving.preprocess.prepare(china)
    assert tensor.shape == (1, 32, 32, 3) and size == (640, 427)
    scores = model.infer({inputs[0].name: tensor})[outputs[0].name]
    assert scores.shape == (1, 4)
    assert abs(float(scores.sum()) - 1.0) < 1e-4


def test_int8_file_under_an_fp32_manifest_is_refused(
    digits_tflite: Path, tflite_dir: Path, tmp_path: Path
) -> None:
    art = Path(shutil.copytree(digits_tflite, tmp_path / "art"))
    shutil.copy(tflite_dir / "digits_int8.tflite", art / "model.tflite")
    rehash(art)
    with pytest.raises(ModelLoadError, match="float32, the model file has int8"):
        load_model(art, options=OPTIONS)


def test_corrupt_tflite_is_a_load_error(digits_tflite: Path, tmp_path: Path) -> None:
    art = Path(shutil.copytree(digits_tflite, tmp_path / "art"))
    (art / "model.tflite").write_bytes(b"TFL3" + b"\0" * 64)
    rehash(art)
    with pytest.raises(ModelLoadError, match="litert cannot load model.tflite"):
        load_model(art, options=OPTIONS)


def test_wrong_shape_is_an_inference_error(digits_tflite: Path) -> None:
    model = load_model(digits_tflite, options=OPTIONS)
    name = model.manifest.inputs[0].name
    with pytest.raises(InferenceError, match="does not fit"):
        model.infer({name: np.zeros((1, 63), np.float32)})
    with pytest.raises(InferenceError, match="dtype float64"):
        model.infer({name: np.zeros((1, 64), np.float64)})


def test_tflite_runtime_is_the_fallback_import(
    digits_tflite: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    with pytest.raises(ModelLoadError, match="pip install ai-edge-litert"):
        load_model(digits_tflite, options=OPTIONS)
    used: list[str] = []

    class Recording(Interpreter):  # type: ignore[misc]
        def __init__(self, **kwargs: object) -> None:
            used.append(str(kwargs["model_path"]))
            super().__init__(**kwargs)

    fallback = types.ModuleType("tflite_runtime.interpreter")
    fallback.Interpreter = Recording  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fallback)
    model = load_model(digits_tflite, options=OPTIONS)
    assert used == [str(digits_tflite / "model.tflite")]
    assert isinstance(model._session, LiteRTSession)


def test_single_path_resizes_between_batch_sizes_and_still_checks(digits_tflite: Path) -> None:
    """The one-input fast path: batch sizes alternate (the interpreter refuses the allocated
    shape, the runner resizes), results match per row, and bad inputs still get the engine's
    own error."""
    model = load_model(digits_tflite, options=OPTIONS)
    name = model.manifest.inputs[0].name
    key = model.manifest.outputs[0].name
    x = load_digits().data[:5].astype(np.float32)
    reference = [model.infer({name: x[i : i + 1]})[key][0] for i in range(5)]
    for rows in (5, 1, 3, 1, 5, 2):
        out = model.infer({name: x[:rows]})[key]
        assert out.shape[0] == rows
        for i in range(rows):
            np.testing.assert_allclose(out[i], reference[i], rtol=1e-5, atol=1e-6)
    with pytest.raises(InferenceError, match="dtype float64"):
        model.infer({name: x[:1].astype(np.float64)})
    with pytest.raises(InferenceError, match="does not fit"):
        model.infer({name: x[:1, :63]})
    with pytest.raises(InferenceError, match="unknown inputs"):
        model.infer({name: x[:1], "extra": x[:1]})
