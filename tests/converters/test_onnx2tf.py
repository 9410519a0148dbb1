"""ONNX → TFLite through onnx2tf, run from its own Python 3.12 tool venv (``python -m
converters.tflite.from_onnx install``; ``.ci/run`` makes it). Without the tool these tests
skip, and under ``EDGEFLEET_REQUIRE_SERVICES=1`` they fail instead."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from converters.api import convert
from converters.errors import InputError
from converters.options import ConvertOptions
from converters.tflite.from_onnx import ENV, find_tool, nhwc_copy
from edgefleet.artifact import load_artifact
from edgefleet.contract import Preprocessing
from tests.converters.factories import conv_onnx, leftovers, save_onnx, write_npz
from tests.utils.required import missing

pytestmark = pytest.mark.slow
QUICK = {"latency_warmup": 2, "latency_runs": 10, "gate_rounds": 2, "gate_runs_per_round": 5}


@pytest.fixture(scope="module")
def tool() -> Path:
    found = find_tool()
    if found is None or not found.is_file():
        why = "onnx2tf tool venv missing: python -m converters.tflite.from_onnx install"
        missing(why)
    return found


@pytest.fixture
def nchw_model(tmp_path: Path) -> tuple[Path, Path]:
    source = save_onnx(conv_onnx(opset=13), tmp_path / "conv.onnx")
    rows = np.random.default_rng(0).random((16, 3, 16, 16)).astype(np.float32)
    return source, write_npz(tmp_path / "c.npz", x=rows)


def test_nchw_input_is_kept_and_the_tflite_model_matches_onnx(
    tool: Path, nchw_model: tuple[Path, Path], tmp_path: Path
) -> None:
    source, calib = nchw_model
    result = convert(
        source,
        tmp_path / "t",
        ConvertOptions(**QUICK, format="tflite", calibration=calib, quantize="none"),
    )
    manifest = load_artifact(tmp_path / "t")
    assert (manifest.format, manifest.source.framework) == ("tflite", "onnx")
    assert manifest.inputs[0].shape == [1, 3, 16, 16]  # the ONNX layout, dims fixed from data
    assert {c.name: c.passed for c in result.report.checks}["fidelity"]


def test_when_onnx2tf_cannot_keep_nchw_the_data_and_manifest_follow_nhwc(
    tool: Path, nchw_model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrapper that refuses -kat (as onnx2tf's NCHW path does on some real graphs) forces
    the fallback: NHWC input, the NCHW calibration rows transposed, preprocessing nhwc."""
    wrapper = tmp_path / "onnx2tf"
    wrapper.write_text(
        f'#!/bin/sh\nfor a in "$@"; do [ "$a" = "-kat" ] && exit 1; done\nexec {tool} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(ENV, str(wrapper))
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    source, calib = nchw_model
    preprocessing = Preprocessing(layout="nchw")
    result = convert(
        source,
        tmp_path / "t",
        ConvertOptions(
            **QUICK, format="tflite", calibration=calib, eval_data=calib,
            preprocessing=preprocessing,
        ),
    )  # fmt: skip
    manifest = load_artifact(tmp_path / "t")
    assert manifest.inputs[0].shape == [1, 16, 16, 3]
    assert manifest.preprocessing is not None and manifest.preprocessing.layout == "nhwc"
    assert {c.name: c.passed for c in result.report.checks}["fidelity"]


def test_nhwc_copy_transposes_only_image_arrays(tmp_path: Path) -> None:
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    copy = nhwc_copy(write_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1])), tmp_path)
    with np.load(copy) as got:
        assert got["x"].shape == (2, 4, 5, 3) and np.array_equal(got["x"][1, 2, 3], x[1, :, 2, 3])
        assert got["y"].tolist() == [0, 1]


def test_without_the_tool_one_line_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "nowhere" / "onnx2tf"))
    source = save_onnx(conv_onnx(opset=13), tmp_path / "conv.onnx")
    with pytest.raises(InputError, match=r"converters\.tflite\.from_onnx install"):
        convert(
            source,
            tmp_path / "o",
            ConvertOptions(format="tflite", input_shapes={"x": [1, 3, 16, 16]}),
        )
    assert leftovers(tmp_path, "o") == []


def test_the_tool_python_is_one_that_runs_not_a_shim_that_exits_127(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a fresh machine pyenv's ``python3.12`` shim is on PATH but exits 127 (3.12 installed,
    not enabled): the installer must try the next candidate, not fail the CI run."""
    import os
    import sys

    from converters.tflite.from_onnx import find_python312

    shim = tmp_path / "bin" / "python3.12"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", str(shim.parent))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.delenv("EDGEFLEET_PYTHON312", raising=False)
    assert find_python312() is None
    root = tmp_path / "pyenv" / "versions" / "3.12.9" / "bin"
    root.mkdir(parents=True)
    (root / "python3").symlink_to(sys.executable)  # runs, but is not >= 3.12 if we are not
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    expected = str(root / "python3") if sys.version_info >= (3, 12) else None
    assert find_python312() == expected
    monkeypatch.setenv("EDGEFLEET_PYTHON312", os.devnull)  # not runnable: skipped
    assert find_python312() == expected
