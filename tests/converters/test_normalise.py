"""Normalising the fp32 model: opset upgrade, fixed dims, quant_pre_process and its fallback,
and the rule that a step which changes the outputs is dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from converters.quantize import normalise as norm
from converters.runtime import make_session, run
from tests.converters.factories import conv_onnx


def _setup() -> tuple[Any, dict[str, Any], dict[str, Any]]:
    model = conv_onnx(opset=11)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.random((6, 3, 16, 16), dtype=np.float32)}
    reference = run(make_session(model.SerializeToString(), optimize=False), feeds)
    return model, feeds, reference


def test_upgrade_fix_dims_and_pre_process(tmp_path: Path) -> None:
    model, feeds, reference = _setup()
    result = norm.normalise(
        model, shapes={}, rows={"x": [3, 16, 16]}, check_feeds=feeds, reference=reference,
        work=tmp_path,
    )  # fmt: skip
    assert result.opset == 17 and result.per_channel_ok and result.notes == []
    assert result.steps[0] == "opset 11→17"
    assert "quant_pre_process (shape inference + ORT basic optimisation)" in result.steps
    dims = result.model.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value")  # the batch stays dynamic without --input-shape
    assert onnx.load(str(result.path)).graph.node  # written for the engines
    got = run(make_session(result.path.read_bytes()), feeds)
    assert norm.outputs_match(got, reference) is None


def test_input_shape_fixes_the_batch_too(tmp_path: Path) -> None:
    model, feeds, reference = _setup()
    result = norm.normalise(
        model,
        shapes={"x": [1, 3, 16, 16]},
        rows={},
        check_feeds={"x": feeds["x"][:1]},
        reference={k: v[:1] for k, v in reference.items()},
        work=tmp_path,
    )
    dims = result.model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 16, 16]
    assert any(s.startswith("fixed x[0]=1") for s in result.steps)


def test_symbolic_shape_failure_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime.quantization as quantization

    real = quantization.quant_pre_process
    calls: list[bool] = []

    def flaky(model: Any, target: Any, **kwargs: Any) -> None:
        calls.append(bool(kwargs.get("skip_symbolic_shape")))
        if not kwargs.get("skip_symbolic_shape"):
            raise AssertionError("_infer_Concat")  # what symbolic inference did on a real model
        real(model, target, **kwargs)

    monkeypatch.setattr(quantization, "quant_pre_process", flaky)
    model, feeds, reference = _setup()
    result = norm.normalise(
        model, shapes={}, rows={}, check_feeds=feeds, reference=reference, work=tmp_path
    )
    assert calls == [False, True]
    assert any("skip_symbolic_shape=True" in n for n in result.notes)
    assert any("quant_pre_process" in s for s in result.steps)


def test_a_step_that_changes_outputs_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime.quantization as quantization

    def corrupt(model: Any, target: Any, **kwargs: Any) -> None:
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        for init in broken.graph.initializer:
            if init.name == "FC":
                values = onnx.numpy_helper.to_array(init) * 2
                init.CopyFrom(onnx.numpy_helper.from_array(values, "FC"))
        Path(target).write_bytes(broken.SerializeToString())

    monkeypatch.setattr(quantization, "quant_pre_process", corrupt)
    model, feeds, reference = _setup()
    result = norm.normalise(
        model, shapes={}, rows={}, check_feeds=feeds, reference=reference, work=tmp_path
    )
    assert any(
        n.startswith("pre-processing dropped: output 'scores' differs") for n in result.notes
    )
    assert not any("quant_pre_process" in s for s in result.steps)
    got = run(make_session(result.path.read_bytes()), feeds)
    assert norm.outputs_match(got, reference) is None


def test_outputs_match() -> None:
    a = {"s": np.array([[1.0, 2.0]], np.float32), "l": np.array([1])}
    assert norm.outputs_match(a, a) is None
    assert "differs by up to" in str(norm.outputs_match({**a, "s": a["s"] + 0.01}, a))
    assert "missing" in str(norm.outputs_match({"s": a["s"]}, a))
    assert "differs" in str(norm.outputs_match({**a, "l": np.array([2])}, a))


def test_pre_processing_does_not_import_torch(tmp_path: Path) -> None:
    """onnxruntime.tools' __init__ imports torch when it is installed; quant_pre_process needs
    only its shape inference (a fresh interpreter: the test process may hold torch already)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")  # without torch there is nothing to avoid
    onnx.save(conv_onnx(opset=13), str(tmp_path / "m.onnx"))
    script = (
        "import sys, onnx, numpy as np\n"
        "from pathlib import Path\n"
        "from converters.quantize import normalise as norm\n"
        "from converters.runtime import make_session, run\n"
        f"work = Path({str(tmp_path)!r})\n"
        "model = onnx.load(str(work / 'm.onnx'))\n"
        "feeds = {'x': np.ones((2, 3, 16, 16), np.float32)}\n"
        "ref = run(make_session(model.SerializeToString()), feeds)\n"
        "out = norm.normalise(model, shapes={}, rows={'x': [3, 16, 16]}, check_feeds=feeds,\n"
        "                     reference=ref, work=work)\n"
        "assert any('quant_pre_process' in s for s in out.steps), out.notes\n"
        "print('torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
