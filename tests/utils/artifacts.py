"""A real ONNX artifact built without the converter, for agent and server tests.

A multinomial logistic regression trained on scikit-learn's digits, written as an ONNX graph by
hand (MatMul → Add → Softmax, ArgMax), with a manifest, a self-test file and a preprocessing spec
that maps the PNGs from :func:`digits_images` back to the digits features.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np

from edgefleet.artifact import hash_file, pack_bundle
from edgefleet.contract import (
    Manifest,
    ModelFile,
    Preprocessing,
    SelfTest,
    TensorSpec,
    parse_manifest,
)
from edgefleet.contract.manifest import Metrics, ResizeSpec, SourceInfo

#: Digits features are 0..16; images store them as 0..255.
PIXEL_SCALE = 16 / 255


@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.float32), data.target.astype(np.int64)


@cache
def _trained(seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    x, y = _digits()
    model = LogisticRegression(max_iter=300, random_state=seed).fit(x[:1400], y[:1400])
    accuracy = float(model.score(x[1400:], y[1400:]))
    return model.coef_.T.astype(np.float32), model.intercept_.astype(np.float32), accuracy


def _onnx_bytes(weights: np.ndarray, bias: np.ndarray) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "digits_logreg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
        ],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _reference_outputs(
    weights: np.ndarray, bias: np.ndarray, x: np.ndarray
) -> dict[str, np.ndarray]:
    logits = x @ weights + bias
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {
        "probabilities": (e / e.sum(axis=1, keepdims=True)).astype(np.float32),
        "label": logits.argmax(axis=1).astype(np.int64),
    }


def build_digits_artifact(
    out_dir: Path,
    *,
    version: str = "1.0.0",
    name: str = "digits",
    seed: int = 0,
    shuffled_labels: bool = False,
) -> Path:
    """Write a complete, verified digits artifact into ``out_dir`` and return it.

    ``shuffled_labels``: the classes' weights are permuted (a fixed derangement), so the model
    is as confident as ever but almost always names the wrong digit (a broken retrain)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, bias, accuracy = _trained(seed)
    if shuffled_labels:
        order = np.array([3, 7, 0, 9, 1, 6, 8, 2, 5, 4])
        weights, bias, accuracy = weights[:, order], bias[order], 0.1
    (out_dir / "model.onnx").write_bytes(_onnx_bytes(weights, bias))

    x, _ = _digits()
    sample = x[1400:1404]
    expected = _reference_outputs(weights, bias, sample)
    buf = io.BytesIO()
    np.savez(
        buf,
        **{"input/input": sample},
        **{f"output/{k}": v for k, v in expected.items()},
    )
    (out_dir / "selftest.npz").write_bytes(buf.getvalue())

    files = []
    for path, role in (("model.onnx", "model"), ("selftest.npz", "selftest")):
        sha, size = hash_file(out_dir / path)
        files.append(ModelFile(path=path, sha256=sha, size=size, role=role))
    manifest = Manifest(
        name=name,
        version=version,
        format="onnx",
        precision="fp32",
        model_file="model.onnx",
        files=files,
        inputs=[TensorSpec(name="input", shape=["batch", 64], dtype="float32")],
        outputs=[
            TensorSpec(name="label", shape=["batch"], dtype="int64"),
            TensorSpec(name="probabilities", shape=["batch", 10], dtype="float32"),
        ],
        preprocessing=Preprocessing(
            color="gray",
            resize=ResizeSpec(width=8, height=8, mode="stretch", interpolation="area"),
            scale=PIXEL_SCALE,
            layout="flat",
        ),
        task="classification",
        labels=[str(i) for i in range(10)],
        source=SourceInfo(framework="sklearn", tools={"tests.utils.artifacts": "1"}),
        metrics=Metrics(top1=accuracy, eval_samples=len(x) - 1400),
        self_test=SelfTest(file="selftest.npz", atol=1e-4, rtol=1e-3, outputs=["probabilities"]),
    )
    (out_dir / "manifest.json").write_text(manifest.to_json())
    return out_dir


def digits_images(out_dir: Path, n: int, *, start: int = 1400) -> list[Path]:
    """Write ``n`` digits as 8×8 grey PNGs (0..16 → 0..255); returns their paths."""
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    x, y = _digits()
    paths = []
    for i in range(start, start + n):
        img = np.clip(np.rint(x[i].reshape(8, 8) / PIXEL_SCALE), 0, 255).astype(np.uint8)
        path = out_dir / f"digit-{i:04d}-label{y[i]}.png"
        if not cv2.imwrite(str(path), img):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths


def bundle_of(artifact_dir: Path, out: Path) -> Path:
    """Pack an artifact directory into a ``.tar.gz`` bundle."""
    return pack_bundle(artifact_dir, out)


def sign_artifact(artifact_dir: Path, private_pem: bytes) -> Path:
    """Sign ``artifact_dir``'s manifest in place with an Ed25519 private key (PEM)."""
    from edgefleet.signing import sign_manifest

    manifest = Manifest.model_validate_json((artifact_dir / "manifest.json").read_bytes())
    (artifact_dir / "manifest.json").write_text(sign_manifest(manifest, private_pem).to_json())
    return artifact_dir


def signed_digits_bundles(
    out_dir: Path, versions: list[str], *, name: str = "digits"
) -> tuple[list[Path], Path]:
    """Signed digits bundles for ``versions`` and the public key (PEM file) that verifies them."""
    from edgefleet.signing import generate_keypair

    out_dir.mkdir(parents=True, exist_ok=True)
    generate_keypair(out_dir / "signing.pem", out_dir / "signing.pub.pem")
    private = (out_dir / "signing.pem").read_bytes()
    bundles = []
    for version in versions:
        artifact = build_digits_artifact(out_dir / f"{name}-{version}", version=version, name=name)
        sign_artifact(artifact, private)
        bundles.append(pack_bundle(artifact, out_dir / f"{name}-{version}.tar.gz"))
    return bundles, out_dir / "signing.pub.pem"


def int8_digits_artifact(fp32_dir: Path, out_dir: Path, *, version: str) -> Path:
    """A faithful int8 of the digits artifact in ``fp32_dir``: onnxruntime's static int8
    quantizer (QDQ, per-tensor minmax — what the converter's ``int8-qdq`` candidates run)
    calibrated on the training rows. Not through ``edgefleet convert``: its latency gate refuses
    int8 on this 8 µs model (slower than fp32 here), rightly; the shadow stage is what is
    tested with it. Self-test vectors are the int8 model's own outputs."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    x, _ = _digits()

    class Rows(CalibrationDataReader):
        def __init__(self) -> None:
            self._rows = iter(x[:1400].astype(np.float32).reshape(-1, 100, 64))

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self._rows, None)
            return None if row is None else {"input": row}

    out_dir.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(fp32_dir / "model.onnx"),
        str(out_dir / "model.onnx"),
        Rows(),
        quant_format=QuantFormat.QDQ,
    )
    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    sample = x[1400:1404].astype(np.float32)
    label, probabilities = session.run(["label", "probabilities"], {"input": sample})
    buf = io.BytesIO()
    np.savez(
        buf,
        **{"input/input": sample},
        **{"output/label": label, "output/probabilities": probabilities},
    )
    (out_dir / "selftest.npz").write_bytes(buf.getvalue())
    manifest = parse_manifest((fp32_dir / "manifest.json").read_bytes())
    files = []
    for path, role in (("model.onnx", "model"), ("selftest.npz", "selftest")):
        sha, size = hash_file(out_dir / path)
        files.append(ModelFile(path=path, sha256=sha, size=size, role=role))
    int8 = manifest.model_copy(
        update={"version": version, "precision": "int8", "files": files, "signature": None}
    )
    (out_dir / "manifest.json").write_text(int8.to_json())
    return out_dir
