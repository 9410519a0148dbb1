from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from agent.engine import BACKENDS, BackendOptions, LoadedModel, load_model
from agent.errors import InferenceError, ModelLoadError
from edgefleet.artifact import read_manifest
from edgefleet.signing import generate_keypair, sign_manifest
from tests.agent.helpers import rehash

OPTIONS = BackendOptions(threads=1)


def test_loads_real_artifact_and_classifies_digits(digits_v1: Path) -> None:
    model = load_model(digits_v1, options=OPTIONS)
    assert isinstance(model, LoadedModel)
    assert str(model.ref) == "digits@1.0.0"
    assert model.scores_output == "probabilities"
    digits = load_digits()
    x = digits.data[1400:].astype(np.float32)
    outputs = model.infer({"input": x})
    accuracy = float((outputs["label"] == digits.target[1400:]).mean())
    assert accuracy > 0.9
    top = model.top1(outputs)
    assert top is not None
    np.testing.assert_array_equal(top[0], outputs["label"])
    assert ((top[1] > 0) & (top[1] <= 1)).all()


def test_registry_is_keyed_by_manifest_format() -> None:
    assert set(BACKENDS) == {"onnx", "tflite"}


def test_tampered_model_file_is_refused(artifact_copy: Path) -> None:
    model_file = artifact_copy / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[-5] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="model.onnx: sha256 does not match"):
        load_model(artifact_copy, options=OPTIONS)


def test_missing_file_is_refused(artifact_copy: Path) -> None:
    (artifact_copy / "selftest.npz").unlink()
    with pytest.raises(ModelLoadError, match="selftest.npz: missing"):
        load_model(artifact_copy, options=OPTIONS)


def test_self_test_mismatch_is_refused(artifact_copy: Path) -> None:
    path = artifact_copy / "selftest.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["output/probabilities"] = arrays["output/probabilities"][:, ::-1].copy()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    rehash(artifact_copy)
    with pytest.raises(ModelLoadError, match="self-test output 'probabilities' differs"):
        load_model(artifact_copy, options=OPTIONS)


def test_self_test_with_pickled_content_is_refused(artifact_copy: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{"input/input": np.array([{"evil": 1}], dtype=object)})
    (artifact_copy / "selftest.npz").write_bytes(buf.getvalue())
    rehash(artifact_copy)
    with pytest.raises(ModelLoadError, match="unreadable self-test file"):
        load_model(artifact_copy, options=OPTIONS)


def test_self_test_with_wrong_input_shape_is_refused(artifact_copy: Path) -> None:
    path = artifact_copy / "selftest.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["input/input"] = arrays["input/input"][:, :32].copy()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    rehash(artifact_copy)
    with pytest.raises(ModelLoadError, match=r"self-test input rejected: .*shape \(4, 32\)"):
        load_model(artifact_copy, options=OPTIONS)


def test_garbage_model_bytes_are_refused(artifact_copy: Path) -> None:
    (artifact_copy / "model.onnx").write_bytes(b"this is not a protobuf" * 10)
    rehash(artifact_copy)
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load model.onnx"):
        load_model(artifact_copy, options=OPTIONS)


def test_onnx_file_under_a_tflite_manifest_is_refused(artifact_copy: Path) -> None:
    shutil.move(artifact_copy / "model.onnx", artifact_copy / "model.tflite")
    data = json.loads((artifact_copy / "manifest.json").read_text())
    data["format"] = "tflite"
    data["model_file"] = "model.tflite"
    for entry in data["files"]:
        if entry["path"] == "model.onnx":
            entry["path"] = "model.tflite"
    (artifact_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="litert cannot load model.tflite"):
        load_model(artifact_copy, options=OPTIONS)


def test_format_without_backend_is_refused(
    artifact_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(BACKENDS, "onnx")
    with pytest.raises(ModelLoadError, match="no backend for model format 'onnx'"):
        load_model(artifact_copy, options=OPTIONS)


def test_manifest_tensor_names_must_match_the_model(artifact_copy: Path) -> None:
    data = json.loads((artifact_copy / "manifest.json").read_text())
    data["inputs"][0]["name"] = "pixels"
    (artifact_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match=r"manifest inputs \['pixels'\] != model inputs"):
        load_model(artifact_copy, options=OPTIONS)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (
            {"input": np.zeros((1, 63), np.float32)},
            r"shape \(1, 63\) does not fit model \('\?', 64\)",
        ),
        ({"input": np.zeros((64,), np.float32)}, r"shape \(64,\) does not fit"),
        ({"input": np.zeros((1, 64), np.float64)}, "dtype float64 != model float32"),
        ({}, "missing input 'input'"),
        (
            {"input": np.zeros((1, 64), np.float32), "extra": np.zeros(1)},
            r"unknown inputs \['extra'\]",
        ),
    ],
)
def test_wrong_feeds_give_clear_errors(
    digits_v1: Path, batch: dict[str, np.ndarray], message: str
) -> None:
    model = load_model(digits_v1, options=OPTIONS)
    with pytest.raises(InferenceError, match=message):
        model.infer(batch)
    assert model.infer({"input": np.zeros((1, 64), np.float32)})["label"].shape == (1,)


def test_signed_manifests_only_when_keys_are_trusted(artifact_copy: Path, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    public = (tmp_path / "k.pub").read_bytes()
    with pytest.raises(ModelLoadError, match="manifest is not signed"):
        load_model(artifact_copy, options=OPTIONS, trusted_keys=[public])
    signed = sign_manifest(read_manifest(artifact_copy), (tmp_path / "k.pem").read_bytes())
    (artifact_copy / "manifest.json").write_text(signed.to_json())
    assert load_model(artifact_copy, options=OPTIONS, trusted_keys=[public]).ref.version == "1.0.0"
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    other = (tmp_path / "other.pub").read_bytes()
    with pytest.raises(ModelLoadError, match="untrusted key"):
        load_model(artifact_copy, options=OPTIONS, trusted_keys=[other])


@pytest.mark.parametrize(("arena", "pattern"), [(True, True), (True, False), (False, False)])
def test_onnxruntime_memory_options_reach_the_session(
    digits_v1: Path, arena: bool, pattern: bool
) -> None:
    options = BackendOptions(threads=1, cpu_mem_arena=arena, mem_pattern=pattern)
    model = load_model(digits_v1, options=options)
    so = model._session._session.get_session_options()  # type: ignore[attr-defined]
    assert (so.enable_cpu_mem_arena, so.enable_mem_pattern) == (arena, pattern)
    x = load_digits().data[1400:1410].astype(np.float32)
    reference = load_model(digits_v1, options=OPTIONS).infer({"input": x})
    np.testing.assert_allclose(
        model.infer({"input": x})["probabilities"], reference["probabilities"]
    )


@pytest.mark.parametrize("fixture", ["digits_v1", "digits_tflite"])
def test_a_dropped_model_is_freed_at_once(fixture: str, request: pytest.FixtureRequest) -> None:
    """No reference cycle through the bound ``infer``: a swapped-out model (and its runtime
    session) goes when the last reference does, not at the next garbage collection."""
    import gc
    import weakref

    model = load_model(request.getfixturevalue(fixture), options=OPTIONS)
    name = model.manifest.inputs[0].name
    model.infer({name: np.zeros((2, 64), np.float32)})  # the general path, then a new shape
    gone = weakref.ref(model)
    gc.disable()
    try:
        del model
        assert gone() is None
    finally:
        gc.enable()
