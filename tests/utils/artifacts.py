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
from edgefleet.contract import Manifest, ModelFile, Preprocessing, SelfTest, TensorSpec
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
    shuffle_labels: bool = False,
) -> Path:
    """Write a complete, verified digits artifact into ``out_dir`` and return it.
    ``shuffle_labels``: the classes are rotated by one (digit d scores as d + 1): a valid model
    whose every top-1 differs from the real one's (a shadow that always disagrees)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, bias, accuracy = _trained(seed)
    if shuffle_labels:
        weights, bias, accuracy = np.roll(weights, 1, axis=1), np.roll(bias, 1), 0.0
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
