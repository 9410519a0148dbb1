"""Fixed batch 1 and dynamic dims (issue #12): every stage feeds a model batches it accepts,
dynamic dims are fixed from the data (``--keep-dynamic`` keeps them), onnxruntime's noise is
one note, and what converts loads in the agent's engine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from converters.api import convert
from converters.errors import ConvertError
from converters.options import ConvertOptions
from converters.quantize.normalise import quiet_onnxruntime
from tests.converters.factories import conv_onnx, save_onnx, write_npz

QUICK: dict[str, Any] = {
    "latency_warmup": 2,
    "latency_runs": 10,
    "gate_rounds": 3,
    "gate_runs_per_round": 5,
    "calibration_methods": ["minmax"],
    "max_exclusion_steps": 1,
}


def _with_input_dims(dims: list[int | str]) -> onnx.ModelProto:
    model = conv_onnx(opset=13)
    for index, dim in enumerate(model.graph.input[0].type.tensor_type.shape.dim):
        dim.Clear()
        if isinstance(dims[index], int):
            dim.dim_value = int(dims[index])
        else:
            dim.dim_param = str(dims[index])
    return model


def _feature_map(batch: int) -> onnx.ModelProto:
    """Conv → Relu with a [batch, 8, 16, 16] output: scored by cosine, so any int8 error
    counts against a zero budget and the budget loop (with its ranking probe) runs."""
    from onnx import TensorProto, helper

    model = _with_input_dims([batch, 3, 16, 16])
    del model.graph.node[2:]
    del model.graph.output[:]
    model.graph.output.append(
        helper.make_tensor_value_info("r", TensorProto.FLOAT, [batch, 8, 16, 16])
    )
    keep = {"W", "B"}
    initializers = [i for i in model.graph.initializer if i.name in keep]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    return model


def _rows(count: int, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, size, size)).astype(np.float32)


def test_fixed_batch_one_model_quantizes_with_many_calibration_rows(tmp_path: Path) -> None:
    """The issue's first traceback: 'Got: 16 Expected: 1' from a probe fed all rows at once."""
    source = save_onnx(_feature_map(1), tmp_path / "fixed.onnx")
    calib = write_npz(tmp_path / "calib.npz", x=_rows(16))
    evals = write_npz(tmp_path / "eval.npz", x=_rows(8, seed=1))
    # max_drop 0: any int8 error runs the budget loop, whose ranking probe is what failed.
    options = ConvertOptions(
        **QUICK, calibration=calib, eval_data=evals, quantize="auto", max_drop=0.0
    )
    result = convert(source, tmp_path / "out", options)
    assert result.manifest.inputs[0].shape == [1, 3, 16, 16]
    q = result.report.quantization
    assert q is not None
    built = [c for c in q.candidates if c.status != "skipped"]
    assert len(built) >= 3 and all(c.status != "failed" for c in built), [
        (c.name, c.reason) for c in built
    ]
    with np.load(tmp_path / "out" / "selftest.npz") as selftest:
        assert selftest["input/x"].shape == (1, 3, 16, 16)  # one batch the model accepts


def test_dynamic_dims_are_fixed_from_the_calibration_data(tmp_path: Path) -> None:
    source = save_onnx(_with_input_dims(["n", 3, "h", "w"]), tmp_path / "dyn.onnx")
    calib = write_npz(tmp_path / "calib.npz", x=_rows(8, size=24))
    options = ConvertOptions(**QUICK, calibration=calib, quantize="none")
    result = convert(source, tmp_path / "out", options)
    # The batch stays dynamic (a device may batch); height and width come from the rows.
    assert result.manifest.inputs[0].shape == ["n", 3, 24, 24]
    assert any(
        "x[2] h→24" in note and "x[3] w→24" in note and "calib.npz" in note
        for note in result.report.notes
    ), result.report.notes
    assert result.manifest.build.config["keep_dynamic"] is False
    kept = convert(
        source,
        tmp_path / "kept",
        ConvertOptions(**QUICK, calibration=calib, quantize="none", keep_dynamic=True),
    )
    assert kept.manifest.inputs[0].shape == ["n", 3, "h", "w"]
    assert not any("fixed" in note for note in kept.report.notes)


def test_onnxruntime_noise_becomes_one_note(capsys: pytest.CaptureFixture[str]) -> None:
    """quant_pre_process logs a whole traceback at ERROR when its optimisation fails."""
    notes: list[str] = []
    log = logging.getLogger("onnxruntime.quantization.shape_inference")
    with quiet_onnxruntime(notes, "quant_pre_process"):
        log.error("ONNX Runtime Model Optimization Failed! Consider rerun with option ...")
        log.error("Traceback (most recent call last):\n  File ...\nValueError: not enough values")
        print("symbolic shape inference chatter")  # noqa: T201 - what onnxruntime does
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert notes == [
        "quant_pre_process: onnxruntime said 'ONNX Runtime Model Optimization Failed! Consider "
        "rerun with option ...' (ValueError: not enough values)"
    ]


def test_an_artifact_the_agent_refuses_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converter loads its artifact with the agent's engine before it reports success."""
    import converters.selftest as selftest

    real = selftest.build_selftest

    def off_by_one(*args: Any, **kwargs: Any) -> Any:
        """Expected outputs the model does not produce (as a wrong batch or tolerance would)."""
        import io

        data = real(*args, **kwargs)
        with np.load(io.BytesIO(data.npz)) as npz:
            arrays = {k: npz[k] + (1.0 if k.startswith("output/") else 0.0) for k in npz.files}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return type(data)(buf.getvalue(), data.atol, data.rtol, data.outputs, data.rows)

    monkeypatch.setattr("converters.formats.onnx.build_selftest", off_by_one)
    source = save_onnx(_with_input_dims([1, 3, 16, 16]), tmp_path / "m.onnx")
    with pytest.raises(ConvertError, match="does not load in the agent's engine"):
        convert(source, tmp_path / "out", ConvertOptions(**QUICK))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
