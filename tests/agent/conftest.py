"""Agent fixtures: one digits artifact per session, copied per test when a test edits it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgefleet.contract import Preprocessing
from edgefleet.contract.manifest import ResizeSpec
from tests.utils.artifacts import build_digits_artifact


@pytest.fixture(scope="session")
def digits_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_digits_artifact(tmp_path_factory.mktemp("v1") / "digits-1.0.0", version="1.0.0")


@pytest.fixture(scope="session")
def digits_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_digits_artifact(
        tmp_path_factory.mktemp("v2") / "digits-2.0.0", version="2.0.0", seed=1
    )


@pytest.fixture
def artifact_copy(digits_v1: Path, tmp_path: Path) -> Path:
    """A private copy of the v1 artifact that the test may edit."""
    return Path(shutil.copytree(digits_v1, tmp_path / "artifact"))


def _digits_tflite(out: Path, model: Path, *, int8: bool) -> Path:
    from tests.agent.factory import tflite_specs, write_artifact
    from tests.utils.artifacts import PIXEL_SCALE, _digits, _reference_outputs, _trained

    inputs, outputs = tflite_specs(model)
    weights, bias, _ = _trained(0)
    x, _ = _digits()
    sample = x[1400:1404]
    probs = _reference_outputs(weights, bias, sample)["probabilities"]
    feed, expected, atol = sample, probs, 1e-4
    if int8:
        from agent.engine.quant import quantize

        qin, qout = inputs[0].quantization, outputs[0].quantization
        assert qin is not None and qout is not None
        feed = quantize(sample, qin, np.dtype(np.int8))
        expected, atol = quantize(probs, qout, np.dtype(np.int8)), 3.0
    return write_artifact(
        out,
        model_bytes=model.read_bytes(),
        fmt="tflite",
        inputs=inputs,
        outputs=outputs,
        name="digits-tfl",
        version="1.0.0-int8" if int8 else "1.0.0",
        precision="int8" if int8 else "fp32",
        preprocessing=Preprocessing(
            color="gray",
            resize=ResizeSpec(width=8, height=8, mode="stretch", interpolation="area"),
            scale=PIXEL_SCALE,
            layout="flat",
        ),
        task="classification",
        labels=[str(i) for i in range(10)],
        self_test=({inputs[0].name: feed}, {outputs[0].name: expected}, atol),
    )


@pytest.fixture(scope="session")
def digits_tflite(tflite_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tfl-fp32") / "digits-tfl"
    return _digits_tflite(out, tflite_dir / "digits_fp32.tflite", int8=False)


@pytest.fixture(scope="session")
def digits_tflite_int8(tflite_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tfl-int8") / "digits-tfl-int8"
    return _digits_tflite(out, tflite_dir / "digits_int8.tflite", int8=True)
