"""ONNX sources: opsets 7 and 13, dynamic and fixed batch, and files that must be refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from converters.api import convert
from converters.errors import InputError
from converters.options import ConvertOptions
from converters.sources import LOADERS, loader_for
from tests.converters.factories import leftovers, linear_onnx, save_onnx, write_npz


def _opts(fast: dict[str, Any], **extra: Any) -> ConvertOptions:
    return ConvertOptions(**fast, **extra)


@pytest.mark.parametrize(("opset", "ir_version"), [(7, 3), (13, 7)])
def test_onnx_source_dynamic_batch(
    opset: int, ir_version: int, fast_options: dict[str, Any], tmp_path: Path
) -> None:
    source = save_onnx(linear_onnx(opset=opset, ir_version=ir_version), tmp_path / "tiny.onnx")
    x = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    y = reference.run(["label"], {"x": x})[0]
    y[:5] = (y[:5] + 1) % 3  # five wrong labels: top-1 must be 45/50, not a free 1.0
    eval_npz = write_npz(tmp_path / "eval.npz", x=x, y=y)

    result = convert(
        source,
        tmp_path / "out",
        _opts(fast_options, task="classification", labels=["a", "b", "c"], eval_data=eval_npz),
    )
    m = result.manifest
    assert m.source.framework == "onnx"
    # Initializers listed as graph inputs (IR 3) are not model inputs.
    assert [(t.name, t.shape, t.dtype) for t in m.inputs] == [("x", ["batch", 8], "float32")]
    assert [(t.name, t.shape, t.dtype) for t in m.outputs] == [
        ("label", ["batch"], "int64"),
        ("scores", ["batch", 3], "float32"),
    ]
    assert m.metrics.top1 == pytest.approx(45 / 50)
    assert m.labels == ["a", "b", "c"]
    assert m.metrics.extra["fidelity.scores.max_abs_error"] == 0.0
    assert m.reference_stats is not None and len(m.reference_stats.output_distribution) == 3
    written = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert max(o.version for o in written.opset_import if o.domain in ("", "ai.onnx")) == opset


def test_onnx_fixed_batch_runs_row_by_row(fast_options: dict[str, Any], tmp_path: Path) -> None:
    source = save_onnx(linear_onnx(opset=13, batch=1), tmp_path / "fixed.onnx")
    x = np.random.default_rng(2).standard_normal((7, 8)).astype(np.float32)
    eval_npz = write_npz(tmp_path / "eval.npz", x=x)
    result = convert(source, tmp_path / "out", _opts(fast_options, eval_data=eval_npz))
    assert result.manifest.inputs[0].shape == [1, 8]
    assert result.manifest.task == "raw"
    assert result.report.eval.samples == 7
    with np.load(tmp_path / "out" / "selftest.npz") as data:
        assert data["input/x"].shape == (1, 8)
    assert result.manifest.reference_stats is not None
    assert result.manifest.reference_stats.output_distribution == []

    fixed4 = save_onnx(linear_onnx(opset=13, batch=4), tmp_path / "fixed4.onnx")
    with pytest.raises(InputError, match="7 rows, not a multiple of the model's fixed batch 4"):
        convert(fixed4, tmp_path / "out4", _opts(fast_options, eval_data=eval_npz))
    eight = write_npz(tmp_path / "eight.npz", x=np.concatenate([x, x[:1]]))
    result = convert(fixed4, tmp_path / "out4", _opts(fast_options, eval_data=eight))
    with np.load(tmp_path / "out4" / "selftest.npz") as data:
        assert data["input/x"].shape == (4, 8) and data["output/scores"].shape == (4, 3)


def test_dynamic_feature_dim_needs_input_shape(
    fast_options: dict[str, Any], tmp_path: Path
) -> None:
    source = save_onnx(linear_onnx(opset=13), tmp_path / "m.onnx")
    model = onnx.load(str(source))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "features"
    save_onnx(model, source)
    with pytest.raises(InputError, match="dynamic dimension 'features'; give a shape"):
        convert(source, tmp_path / "out", _opts(fast_options))
    with pytest.raises(InputError, match="dimension 1 is 9; the model fixes"):
        convert(
            save_onnx(linear_onnx(opset=13), tmp_path / "n.onnx"),
            tmp_path / "out",
            _opts(fast_options, input_shapes={"x": [1, 9]}),
        )
    with pytest.raises(InputError, match="unknown inputs \\['nope'\\]"):
        convert(source, tmp_path / "out", _opts(fast_options, input_shapes={"nope": [1, 8]}))
    result = convert(source, tmp_path / "out", _opts(fast_options, input_shapes={"x": [1, 8]}))
    # --input-shape fixes the graph's dims but the batch (issue #12), and the report says so ...
    assert result.manifest.inputs[0].shape == ["batch", 8]
    assert any("x[1] features→8" in note for note in result.report.notes)
    # ... unless --keep-dynamic, which only uses the shape to run the model.
    kept = convert(
        source,
        tmp_path / "kept",
        _opts(fast_options, input_shapes={"x": [1, 8]}, keep_dynamic=True),
    )
    assert kept.manifest.inputs[0].shape == ["batch", "features"]
    assert leftovers(tmp_path, "out") == ["out"]


def test_bad_onnx_files_are_refused(fast_options: dict[str, Any], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    old = save_onnx(linear_onnx(opset=6, ir_version=3), tmp_path / "old.onnx")
    broken = linear_onnx(opset=13)
    broken.graph.node[1].input[0] = "does_not_exist"
    save_onnx(broken, tmp_path / "broken.onnx")
    empty_graph = helper.make_model(
        helper.make_graph([], "empty", [], []), opset_imports=[helper.make_opsetid("", 13)]
    )
    save_onnx(empty_graph, tmp_path / "empty.onnx")
    external = linear_onnx(opset=13)
    external.graph.initializer[0].data_location = TensorProto.EXTERNAL
    save_onnx(external, tmp_path / "external.onnx")
    strings = linear_onnx(opset=13)
    strings.graph.input[0].type.tensor_type.elem_type = TensorProto.STRING
    save_onnx(strings, tmp_path / "strings.onnx")

    cases = {
        garbage: "garbage.onnx (is not a readable ONNX model|fails the ONNX checker)",
        old: "opset 6 is too old; the converter needs opset >= 7",
        tmp_path / "broken.onnx": "broken.onnx fails the ONNX checker",
        tmp_path / "empty.onnx": "at least one input and one output|fails the ONNX checker",
        tmp_path / "external.onnx": "external files",
        tmp_path / "strings.onnx": "fails the ONNX checker|element type 8",
        tmp_path / "missing.onnx": "no such file",
    }
    for path, message in cases.items():
        with pytest.raises(InputError, match=message) as err:
            convert(path, tmp_path / "out", _opts(fast_options))
        assert "\n" not in str(err.value)
        assert leftovers(tmp_path, "out") == []


def test_unsupported_suffix_names_supported_kinds(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"supported kinds are sklearn \(.pkl/.pickle/.joblib\)"):
        loader_for(tmp_path / "model.h5")
    assert loader_for(Path("M.ONNX")) is LOADERS["onnx"]
    assert loader_for(Path("m.joblib")) is LOADERS["sklearn"]
