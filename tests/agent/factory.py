"""Artifact factories for agent tests: any model file + tensor specs → a verified artifact."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgefleet.artifact import hash_file
from edgefleet.contract import Manifest, ModelFile, Preprocessing, SelfTest, TensorSpec
from edgefleet.contract.manifest import QuantParams, SourceInfo

ROOT = Path(__file__).resolve().parents[2]


def write_artifact(
    out_dir: Path,
    *,
    model_bytes: bytes,
    fmt: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    name: str = "model",
    version: str = "1.0.0",
    preprocessing: Preprocessing | None = None,
    task: str = "raw",
    labels: list[str] | None = None,
    self_test: tuple[dict[str, np.ndarray], dict[str, np.ndarray], float] | None = None,
    precision: str = "fp32",
) -> Path:
    """Write model, optional self-test (inputs, expected outputs, atol) and manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_file = f"model.{fmt}"
    (out_dir / model_file).write_bytes(model_bytes)
    paths = [(model_file, "model")]
    test = None
    if self_test is not None:
        feeds, expected, atol = self_test
        buf = io.BytesIO()
        np.savez(
            buf,
            **{f"input/{k}": v for k, v in feeds.items()},
            **{f"output/{k}": v for k, v in expected.items()},
        )
        (out_dir / "selftest.npz").write_bytes(buf.getvalue())
        paths.append(("selftest.npz", "selftest"))
        test = SelfTest(file="selftest.npz", atol=atol, rtol=1e-3, outputs=sorted(expected))
    files = []
    for path, role in paths:
        sha, size = hash_file(out_dir / path)
        files.append(ModelFile(path=path, sha256=sha, size=size, role=role))
    manifest = Manifest.model_validate(
        {
            "name": name,
            "version": version,
            "format": fmt,
            "precision": precision,
            "model_file": model_file,
            "files": [f.model_dump() for f in files],
            "inputs": [t.model_dump() for t in inputs],
            "outputs": [t.model_dump() for t in outputs],
            "preprocessing": preprocessing.model_dump() if preprocessing else None,
            "task": task,
            "labels": labels or [],
            "source": SourceInfo(framework="tflite" if fmt == "tflite" else "onnx").model_dump(),
            "self_test": test.model_dump() if test else None,
        }
    )
    (out_dir / "manifest.json").write_text(manifest.to_json())
    return out_dir


def tflite_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Tensor specs as the model file declares them (names, dims, dtypes, quantization)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))

    def spec(d: dict[str, object]) -> TensorSpec:
        signature = [int(v) for v in d["shape_signature"]]  # type: ignore[attr-defined]
        scale, zero = d["quantization"]  # type: ignore[misc]
        dtype = np.dtype(d["dtype"]).name  # type: ignore[call-overload]
        quant = QuantParams(scale=[scale], zero_point=[zero]) if scale else None
        return TensorSpec(
            name=str(d["name"]),
            shape=["batch" if v < 0 else v for v in signature],
            dtype=dtype,
            quantization=quant,
        )

    return (
        [spec(d) for d in interp.get_input_details()],
        [spec(d) for d in interp.get_output_details()],
    )


def make_tflite_models(out: Path) -> Path | None:
    """Run :mod:`tests.agent.tflite_factory` in a subprocess; None if TensorFlow is missing."""
    probe = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], capture_output=True, cwd=ROOT, timeout=120
    )
    if probe.returncode != 0:
        return None
    done = subprocess.run(
        [sys.executable, "-m", "tests.agent.tflite_factory", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return out


def conv_artifact(out_dir: Path, *, size: int = 32, channels: int = 8) -> Path:
    """A conv image classifier (ONNX, NCHW RGB, stretch resize) with a self-test."""
    import onnxruntime as ort

    from edgefleet.contract.manifest import ResizeSpec
    from tests.agent.onnx_models import conv_classifier

    model = conv_classifier(size, channels)
    probe = np.random.default_rng(1).random((1, 3, size, size), dtype=np.float32)
    # The self-test reference comes from onnxruntime with graph optimisations off.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    expected = ref.run(["scores"], {"images": probe})[0]
    return write_artifact(
        out_dir,
        model_bytes=model,
        fmt="onnx",
        name="conv",
        inputs=[TensorSpec(name="images", shape=["batch", 3, size, size], dtype="float32")],
        outputs=[TensorSpec(name="scores", shape=["batch", 10], dtype="float32")],
        preprocessing=Preprocessing(resize=ResizeSpec(width=size, height=size), layout="nchw"),
        task="classification",
        labels=[f"c{i}" for i in range(10)],
        self_test=({"images": probe}, {"scores": expected}, 1e-5),
    )
