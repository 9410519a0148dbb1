"""Eval data files: malformed, oversized and hostile .npz files are refused with one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.api import convert
from converters.errors import InputError
from converters.evaldata import (
    MAX_CHECK_ELEMENTS,
    MIN_CHECK_ROWS,
    check_rows,
    deploy_batch,
    load_eval,
    row_shape,
    synthetic_inputs,
)
from converters.options import ConvertOptions
from edgefleet.contract import TensorSpec
from tests.converters.conftest import DigitsSetup
from tests.converters.factories import leftovers, write_npz, write_pickle, zip_bomb_npz

SPEC = [TensorSpec(name="input", shape=["batch", 64], dtype="float32")]


def _x(rows: int = 5, dtype: Any = np.float32) -> np.ndarray:
    return np.zeros((rows, 64), dtype=dtype)


def test_good_eval_file_is_cast_and_kept_whole(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "e.npz", x=_x(6, np.float64), y=np.arange(6))
    data = load_eval(path, inputs=SPEC, max_bytes=1 << 20)
    assert data.samples == 6 and data.inputs["input"].dtype == np.float32
    assert data.labels is not None and data.labels.tolist() == list(range(6))
    multi = [SPEC[0], TensorSpec(name="ids", shape=["batch", 2], dtype="int64")]
    path = write_npz(
        tmp_path / "m.npz", **{"x/input": _x(3), "x/ids": np.ones((3, 2), dtype=np.int32)}
    )
    data = load_eval(path, inputs=multi, max_bytes=1 << 20)
    assert data.inputs["ids"].dtype == np.int64 and data.labels is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": _x(4)[:, :10]}, "dimension 1 is 10; the input needs 64"),
        ({"x": _x(4)[0]}, "has shape \\[64\\], the input needs \\['batch', 64\\]"),
        ({"x": np.array(["a"] * 64).reshape(1, 64)}, "dtype <U1, not a number type"),
        ({"x": _x(4).astype(np.complex64)}, "not a number type"),
        ({"x": _x(0)}, "is empty \\(0 rows\\)"),
        ({"x": np.full((2, 64), np.nan, dtype=np.float32)}, "NaN or infinite"),
        ({"features": _x(2)}, "lacks \\['x'\\]"),
        ({"x": _x(3), "y": np.arange(4)}, "y has shape \\[4\\], expected \\[3\\]"),
        ({"x": _x(3), "y": np.ones((3, 2))}, "y has shape \\[3, 2\\]"),
    ],
)
def test_bad_eval_arrays(tmp_path: Path, arrays: dict[str, Any], message: str) -> None:
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=message) as err:
        load_eval(path, inputs=SPEC, max_bytes=1 << 20)
    assert "\n" not in str(err.value)


def test_int_input_refuses_float_eval(tmp_path: Path) -> None:
    spec = [TensorSpec(name="ids", shape=["batch", 2], dtype="int64")]
    path = write_npz(tmp_path / "f.npz", x=np.ones((2, 2), dtype=np.float32))
    with pytest.raises(InputError, match="x is float32 but the input is int64"):
        load_eval(path, inputs=spec, max_bytes=1 << 20)


def test_hostile_eval_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 definitely not a zip" * 20)
    with pytest.raises(InputError, match="not a readable .npz"):
        load_eval(garbage, inputs=SPEC, max_bytes=1 << 20)
    bomb = zip_bomb_npz(tmp_path / "bomb.npz", unpacked=4 << 20)
    assert bomb.stat().st_size < 64 * 1024
    with pytest.raises(InputError, match="unpacks to 4194304 bytes; the limit is 1048576"):
        load_eval(bomb, inputs=SPEC, max_bytes=1 << 20)
    big = write_npz(tmp_path / "big.npz", x=np.random.default_rng(0).random((300, 64)))
    with pytest.raises(InputError, match="bytes; the limit is 1000"):
        load_eval(big, inputs=SPEC, max_bytes=1000)
    # Object arrays need pickle, which is never allowed for eval data.
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([{"a": 1}] * 2, dtype=object))
    with pytest.raises(InputError, match="not a readable .npz"):
        load_eval(obj, inputs=SPEC, max_bytes=1 << 20)
    pickled = write_pickle(tmp_path / "p.npz", {"x": _x(2)})
    with pytest.raises(InputError, match="not a readable .npz"):
        load_eval(pickled, inputs=SPEC, max_bytes=1 << 20)
    with pytest.raises(InputError, match="no such file"):
        load_eval(tmp_path / "missing.npz", inputs=SPEC, max_bytes=1 << 20)


def test_bad_eval_through_convert_leaves_nothing(
    digits_setup: DigitsSetup, fast_options: dict[str, Any], tmp_path: Path
) -> None:
    bad = write_npz(tmp_path / "bad.npz", x=np.zeros((3, 10), dtype=np.float32))
    with pytest.raises(InputError, match="dimension 1 is 10"):
        convert(
            digits_setup.models["logreg"].path,
            tmp_path / "out",
            ConvertOptions(**fast_options, eval_data=bad),
        )
    assert leftovers(tmp_path, "out") == []


def test_synthetic_inputs_are_deterministic_and_typed() -> None:
    specs = [
        TensorSpec(name="f", shape=["batch", 3], dtype="float32"),
        TensorSpec(name="i", shape=["batch", 2], dtype="int32"),
        TensorSpec(name="b", shape=["batch", 1], dtype="bool"),
    ]
    a = synthetic_inputs(specs, {}, rows=5)
    b = synthetic_inputs(specs, {}, rows=5)
    for name in "fib":
        np.testing.assert_array_equal(a[name], b[name])
    assert [a[n].dtype for n in "fib"] == [np.float32, np.int32, np.bool_]
    assert a["f"].shape == (5, 3)
    fixed = [TensorSpec(name="f", shape=[4, 3], dtype="float32")]
    assert synthetic_inputs(fixed, {}, rows=5)["f"].shape == (8, 3)


def test_shapes_and_deploy_batch() -> None:
    spec = TensorSpec(name="img", shape=["n", 3, "h", "w"], dtype="float32")
    assert row_shape(spec, {"img": [2, 3, 32, 48]}) == [3, 32, 48]
    assert deploy_batch(spec, {"img": [2, 3, 32, 48]}) == 2
    assert deploy_batch(spec, {}) == 1
    with pytest.raises(InputError, match="dimension 1 is 1; the model fixes 3"):
        row_shape(spec, {"img": [1, 1, 32, 48]})
    with pytest.raises(InputError, match="3 dimensions"):
        row_shape(spec, {"img": [1, 3, 32]})
    with pytest.raises(InputError, match="is a scalar"):
        row_shape(TensorSpec(name="s", shape=[], dtype="float32"), {})


def test_check_rows_are_capped_by_elements_for_big_inputs_only() -> None:
    small = {"x": np.zeros((32, 64), np.float32)}
    assert check_rows(small, batch=None, outputs={"y": np.zeros(32)}) == 32
    wide = MAX_CHECK_ELEMENTS // 4  # 4 rows fit: the floor applies
    big = {"x": np.broadcast_to(np.float32(0), (32, wide))}  # no memory behind it
    assert check_rows(big, batch=None, outputs={"y": np.zeros(32)}) == MIN_CHECK_ROWS
    assert check_rows(big, batch=3, outputs={"y": np.zeros(32)}) == 9  # a whole batch
    mid = {"x": np.broadcast_to(np.float32(0), (32, MAX_CHECK_ELEMENTS // 20))}
    assert check_rows(mid, batch=None, outputs={"y": np.zeros(32)}) == 20
    # An output that is not one row per input row (boxes after NMS): every row is checked.
    assert check_rows(big, batch=None, outputs={"boxes": np.zeros((7, 6))}) == 32
