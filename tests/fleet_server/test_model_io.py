"""The server reads a model file's real inputs and outputs (ONNX protobuf, TFLite flatbuffer,
no runtime) and refuses a manifest that disagrees; hostile model files are one clean error."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edgefleet.contract import Manifest, TensorSpec
from fleet_server.runtime import Runtime
from fleet_server.services.model_io import ModelIOError, io_mismatch, onnx_reader, read_model_io
from tests.agent.helpers import rehash
from tests.agent.onnx_models import conv_classifier
from tests.fleet_server.helpers import operator, upload
from tests.utils.artifacts import bundle_of

pytestmark = pytest.mark.integration


@pytest.fixture
def tflite_models(tflite_dir: Path) -> Path:
    return tflite_dir


def _litert_io(path: Path) -> tuple[list[tuple[str, str, list[int | None]]], ...]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))

    def rows(details: list[dict[str, object]]) -> list[tuple[str, str, list[int | None]]]:
        return [
            (
                str(d["name"]),
                np.dtype(d["dtype"]).name,  # type: ignore[call-overload]
                [int(v) if v > 0 else None for v in d["shape_signature"]],  # type: ignore[attr-defined]
            )
            for d in details
        ]

    return rows(interpreter.get_input_details()), rows(interpreter.get_output_details())


def _rows(path: Path, fmt: str) -> tuple[list[tuple[str, str | None, object]], ...]:
    io = read_model_io(fmt, path)
    return (
        [(t.name, t.dtype, t.shape) for t in io.inputs],
        [(t.name, t.dtype, t.shape) for t in io.outputs],
    )


def test_tflite_reader_agrees_with_litert(tflite_models: Path) -> None:
    for name in ("digits_fp32", "digits_int8", "conv_fp32"):
        path = tflite_models / f"{name}.tflite"
        assert _rows(path, "tflite") == _litert_io(path), name


def test_onnx_reader_agrees_with_onnx(digits_artifact: Path, tmp_path: Path) -> None:
    import onnx

    conv = tmp_path / "conv.onnx"
    conv.write_bytes(conv_classifier(16, 4))
    for path in (digits_artifact / "model.onnx", conv):
        model = onnx.load(str(path), load_external_data=False)
        weights = {i.name for i in model.graph.initializer}

        def row(v: onnx.ValueInfoProto) -> tuple[str, str, list[int | None]]:
            t = v.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
            return v.name, dtype, [d.dim_value or None for d in t.shape.dim]

        want = (
            [row(v) for v in model.graph.input if v.name not in weights],
            [row(v) for v in model.graph.output],
        )
        assert _rows(path, "onnx") == want


def _manifest(artifact: Path) -> Manifest:
    return Manifest.model_validate_json((artifact / "manifest.json").read_bytes())


def _with_input(manifest: Manifest, **changes: object) -> Manifest:
    first = manifest.inputs[0]
    spec = TensorSpec.model_validate({**first.model_dump(), **changes})
    return manifest.model_copy(update={"inputs": [spec, *manifest.inputs[1:]]})


def _with_outputs(manifest: Manifest, outputs: list[TensorSpec]) -> Manifest:
    """``manifest`` with other outputs (its self-test compares them, so it follows)."""
    assert manifest.self_test is not None
    test = manifest.self_test.model_copy(update={"outputs": [o.name for o in outputs]})
    return manifest.model_copy(update={"outputs": outputs, "self_test": test})


def test_a_manifest_that_lies_is_named(digits_artifact: Path, tflite_models: Path) -> None:
    manifest = _manifest(digits_artifact)
    real = read_model_io("onnx", digits_artifact / "model.onnx")
    assert io_mismatch(manifest, real) is None
    problem = io_mismatch(_with_input(manifest, shape=["batch", 63]), real)
    assert problem == (
        "input 'input': dim 1 is 63 in the manifest but 64 in the model "
        "(manifest (?, 63), model (?, 64))"
    )
    assert "rank" in str(io_mismatch(_with_input(manifest, shape=["batch", 8, 8]), real))
    assert io_mismatch(_with_input(manifest, dtype="float16"), real) == (
        "input 'input': manifest dtype float16, model float32"
    )
    renamed = io_mismatch(_with_input(manifest, name="pixels"), real)
    assert renamed == "the model has input 'input', which the manifest does not list"
    out = manifest.outputs[0]
    ghost = TensorSpec.model_validate({**out.model_dump(), "name": "scores"})
    lied = io_mismatch(_with_outputs(manifest, [ghost]), real)
    assert lied is not None and "manifest output 'scores' is not a model output" in lied
    # Issue #12: a batch-1 TFLite model whose manifest said the batch was dynamic.
    conv = read_model_io("tflite", tflite_models / "conv_fp32.tflite")
    (spec,) = conv.inputs
    assert spec.shape == [1, 32, 32, 3]
    fixed = TensorSpec(name=spec.name, shape=[1, 32, 32, 3], dtype="float32")
    outputs = [
        TensorSpec(name=o.name, shape=[d or "batch" for d in o.shape or []], dtype="float32")
        for o in conv.outputs
    ]
    # (io_mismatch compares tensors only: the ONNX manifest's other fields can stay.)
    base = _with_outputs(manifest, outputs).model_copy(update={"inputs": [fixed]})
    assert io_mismatch(base, conv) is None
    dynamic = base.model_copy(
        update={"inputs": [TensorSpec(name=spec.name, shape=["batch", 32, 32, 3], dtype="float32")]}
    )
    assert "dim 0 is dynamic 'batch' in the manifest but 1 in the model" in str(
        io_mismatch(dynamic, conv)
    )


def _refused(path: Path, fmt: str) -> str:
    with pytest.raises(ModelIOError) as err:
        read_model_io(fmt, path)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_hostile_model_files_are_one_clean_error(
    digits_artifact: Path, tflite_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_bytes = (digits_artifact / "model.onnx").read_bytes()
    tfl_bytes = (tflite_models / "conv_fp32.tflite").read_bytes()
    bad = tmp_path / "bad"
    for data, fmt in ((onnx_bytes, "onnx"), (tfl_bytes, "tflite")):
        for raw in (b"", b"\0", os.urandom(4096), b"TFL3" * 64, data[: len(data) // 2]):
            bad.write_bytes(raw)
            try:
                read_model_io(fmt, bad)  # garbage may parse as an empty model: never a crash
            except ModelIOError as err:
                assert "\n" not in str(err)
        # Mutations anywhere in a real file: a result or ModelIOError, never another exception.
        rng = np.random.default_rng(0)
        for _ in range(150):
            mutated = bytearray(data)
            for at in rng.integers(0, len(data), size=4):
                mutated[at] = int(rng.integers(0, 256))
            bad.write_bytes(bytes(mutated))
            try:
                read_model_io(fmt, bad)
            except ModelIOError:
                pass
    # A TFLite shape vector declaring 2**31 dims; an ONNX message whose length runs past the file.
    flat = bytearray(tfl_bytes)
    bad.write_bytes(b"\x0c\0\0\0TFL3" + b"\xff" * 64)
    assert "TFLite" in _refused(bad, "tflite") or "truncated" in _refused(bad, "tflite")
    bad.write_bytes(bytes(flat[:200]))
    assert "truncated" in _refused(bad, "tflite") or "corrupt" in _refused(bad, "tflite")
    bad.write_bytes(b"\x3a\xff\xff\xff\x0f" + b"\0" * 16)  # graph (7) of length 2**32-1
    assert "truncated ONNX file" in _refused(bad, "onnx")
    bad.write_bytes(b"\x08" + b"\xff" * 64)  # a varint that never ends
    assert "corrupt ONNX file" in _refused(bad, "onnx")
    # A graph of millions of empty fields is refused by count, not walked for minutes.
    monkeypatch.setattr(onnx_reader, "MAX_FIELDS", 1000)
    many = b"\x08\x00" * 1001
    bad.write_bytes(b"\x3a" + _varint(len(many)) + many)
    assert _refused(bad, "onnx") == "ONNX graph has more than 1000 entries"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _push(client: TestClient, artifact: Path, tmp_path: Path, *, name: str) -> Any:
    return upload(client, bundle_of(artifact, tmp_path / f"{name}.tar.gz"))


def test_push_refuses_a_lying_manifest_and_garbage_models(
    app: tuple[TestClient, Runtime], digits_artifact: Path, tmp_path: Path
) -> None:
    client = app[0]
    lying = Path(shutil.copytree(digits_artifact, tmp_path / "lying"))
    manifest = json.loads((lying / "manifest.json").read_text())
    manifest["inputs"][0]["shape"] = ["batch", 63]
    (lying / "manifest.json").write_text(json.dumps(manifest))
    refused = _push(client, lying, tmp_path, name="lying")
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == (
        "manifest does not match model.onnx: input 'input': dim 1 is 63 in the manifest but 64 "
        "in the model (manifest (?, 63), model (?, 64))"
    )
    garbage = Path(shutil.copytree(digits_artifact, tmp_path / "garbage"))
    (garbage / "model.onnx").write_bytes(b"\xff" * 2048)
    rehash(garbage)
    refused = _push(client, garbage, tmp_path, name="garbage")
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == (
        "invalid bundle: model.onnx is not a readable onnx model: corrupt ONNX file "
        "(a varint runs past its message)"
    )
    assert client.get("/api/v1/models", headers=operator()).json() == []
    accepted = _push(client, digits_artifact, tmp_path, name="good")
    assert accepted.status_code == 201, accepted.text
