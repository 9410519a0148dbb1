"""Eval data (an ``.npz`` of ``x`` and ``y``) and deterministic synthetic inputs.

The eval file is untrusted: it is size-checked (packed and unpacked) before numpy reads it,
loaded with ``allow_pickle=False``, and every array is checked against the model's inputs.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters.errors import InputError, one_line
from edgefleet.contract import TensorSpec

#: A model with one input reads ``x``; with several, ``x/<input name>`` each.
X_KEY = "x"
Y_KEY = "y"
_INT_KINDS = "iub"


@dataclass(frozen=True)
class EvalSet:
    """Model inputs by name (row-aligned) and, when present, the true labels."""

    inputs: dict[str, Any]
    labels: Any | None
    samples: int


def _check_archive(path: Path, max_bytes: int) -> None:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"eval data {path.name} is {size} bytes; the limit is {max_bytes}")
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile) as err:
        raise InputError(f"eval data {path.name} is not a readable .npz: {one_line(err)}") from err
    if len(members) > 64:
        raise InputError(f"eval data {path.name} holds {len(members)} arrays; the limit is 64")
    unpacked = sum(m.file_size for m in members)
    if unpacked > max_bytes:
        raise InputError(
            f"eval data {path.name} unpacks to {unpacked} bytes; the limit is {max_bytes}"
        )


def _key_for(spec: TensorSpec, single: bool) -> str:
    return X_KEY if single else f"{X_KEY}/{spec.name}"


def conform(array: Any, spec: TensorSpec, *, key: str, what: str) -> Any:
    """``array`` cast to the input's dtype, after checking kind, rank, fixed dims and finiteness."""
    import numpy as np

    if array.dtype.kind not in "iubf":
        raise InputError(f"{what}: {key} has dtype {array.dtype}, not a number type")
    target = np.dtype(spec.dtype)
    if target.kind in _INT_KINDS and array.dtype.kind not in _INT_KINDS:
        raise InputError(f"{what}: {key} is {array.dtype} but the input is {spec.dtype}")
    if array.ndim != len(spec.shape):
        raise InputError(
            f"{what}: {key} has shape {list(array.shape)}, the input needs {spec.shape}"
        )
    for axis, (got, want) in enumerate(zip(array.shape[1:], spec.shape[1:], strict=True)):
        if isinstance(want, int) and got != want:
            raise InputError(f"{what}: {key} dimension {axis + 1} is {got}; the input needs {want}")
    cast = np.ascontiguousarray(array.astype(target, copy=False))
    if target.kind == "f" and not np.isfinite(cast).all():
        raise InputError(f"{what}: {key} holds NaN or infinite values (as {target})")
    return cast


def load_eval(path: Path, *, inputs: list[TensorSpec], max_bytes: int) -> EvalSet:
    """Read and check an eval ``.npz`` against the model's inputs."""
    import numpy as np

    if not path.is_file():
        raise InputError(f"eval data {path}: no such file")
    _check_archive(path, max_bytes)
    single = len(inputs) == 1
    arrays: dict[str, Any] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            wanted = [_key_for(s, single) for s in inputs]
            missing = [k for k in wanted if k not in data.files]
            if missing:
                raise InputError(
                    f"eval data {path.name} lacks {missing}; it holds {sorted(data.files)[:8]}"
                )
            for spec, key in zip(inputs, wanted, strict=True):
                arrays[spec.name] = conform(data[key], spec, key=key, what=f"eval data {path.name}")
            labels = np.asarray(data[Y_KEY]) if Y_KEY in data.files else None
    except InputError:
        raise
    except Exception as err:  # numpy/zipfile raise several types for corrupt members
        raise InputError(f"eval data {path.name} is not a readable .npz: {one_line(err)}") from err
    counts = {len(a) for a in arrays.values()}
    if len(counts) != 1:
        raise InputError(f"eval data {path.name}: inputs have different numbers of rows")
    samples = counts.pop()
    if samples == 0:
        raise InputError(f"eval data {path.name} is empty (0 rows)")
    if labels is not None:
        if labels.ndim != 1 or len(labels) != samples:
            raise InputError(
                f"eval data {path.name}: y has shape {list(labels.shape)}, expected [{samples}]"
            )
        if labels.dtype.kind not in "iubfU":
            raise InputError(f"eval data {path.name}: y has dtype {labels.dtype}")
    return EvalSet(inputs=arrays, labels=labels, samples=samples)


def static_batch(spec: TensorSpec) -> int | None:
    """The fixed batch size of an input, or None when dimension 0 is dynamic."""
    if not spec.shape:
        raise InputError(f"input {spec.name!r} is a scalar; the converter needs a batch dimension")
    first = spec.shape[0]
    return first if isinstance(first, int) else None


def batch_of(inputs: list[TensorSpec]) -> int | None:
    """The batch every run must have: an input's fixed dimension 0 (a model with a state input
    ``h[1, 1, 128]`` beside ``x[?, 576]`` accepts one row at a time), else None (any)."""
    fixed = [b for b in (static_batch(s) for s in inputs) if b is not None]
    return max(fixed) if fixed else None


def row_shape(spec: TensorSpec, overrides: dict[str, list[int]]) -> list[int]:
    """The dimensions after the batch dimension, as integers (--input-shape fills dynamic ones)."""
    static_batch(spec)
    given = overrides.get(spec.name)
    if given is not None:
        if len(given) != len(spec.shape):
            raise InputError(
                f"--input-shape {spec.name}: {len(given)} dimensions, the input has {spec.shape}"
            )
        for index, (got, want) in enumerate(zip(given, spec.shape, strict=True)):
            if isinstance(want, int) and got != want:
                raise InputError(
                    f"--input-shape {spec.name}: dimension {index} is {got}; the model fixes {want}"
                )
        return given[1:]
    dims: list[int] = []
    for dim in spec.shape[1:]:
        if not isinstance(dim, int):
            raise InputError(
                f"input {spec.name!r} has dynamic dimension {dim!r}; "
                f"give a shape with --input-shape {spec.name}=..."
            )
        dims.append(dim)
    return dims


def deploy_batch(spec: TensorSpec, overrides: dict[str, list[int]]) -> int:
    """The batch a device runs: the fixed one, else --input-shape's first dimension, else 1."""
    fixed = static_batch(spec)
    if fixed is not None:
        return fixed
    given = overrides.get(spec.name)
    return given[0] if given else 1


def check_overrides(inputs: list[TensorSpec], overrides: dict[str, list[int]]) -> None:
    """Every --input-shape names a real input and fits it."""
    names = {s.name for s in inputs}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InputError(
            f"--input-shape names unknown inputs {unknown}; inputs are {sorted(names)}"
        )
    for spec in inputs:
        row_shape(spec, overrides)


def synthetic_inputs(
    inputs: list[TensorSpec], overrides: dict[str, list[int]], *, rows: int, seed: int = 0
) -> dict[str, Any]:
    """Deterministic inputs: standard normal floats, small non-negative integers, coin flips.

    ``rows`` is rounded up to a multiple of a fixed batch size.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    fixed = [b for b in (static_batch(s) for s in inputs) if b is not None]
    step = max(fixed) if fixed else 1
    total = -(-rows // step) * step
    feeds: dict[str, Any] = {}
    for spec in inputs:
        shape = [total, *row_shape(spec, overrides)]
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            feeds[spec.name] = rng.integers(0, 10, size=shape).astype(dtype)
    return feeds


def take_rows(feeds: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """The same rows of every input."""
    return {name: value[start:stop] for name, value in feeds.items()}


#: Input elements an equivalence check runs at most: the source against its ONNX export (the
#: fidelity check) and the normalised graph against the original. Both compare two
#: computations of one function row by row, so past a few rows a big input adds time, not
#: evidence: 32 eval rows of the 800x608 PicoDet (1.46 M elements a row) cost 14-16 s a run
#: here, for each of the two checks. 8 rows of it; every row of a 320x320 input.
MAX_CHECK_ELEMENTS = 12_000_000
#: Rows an equivalence check runs at least, whatever their size.
MIN_CHECK_ROWS = 8


def check_rows(feeds: Mapping[str, Any], *, batch: int | None, outputs: Mapping[str, Any]) -> int:
    """Rows an equivalence check runs: all of them, or the first ones within
    :data:`MAX_CHECK_ELEMENTS` (at least :data:`MIN_CHECK_ROWS`), a multiple of a fixed batch.
    All of them when an output is not one row per input row (its prefix would not match)."""
    import numpy as np

    total = len(next(iter(feeds.values())))
    if any(len(np.atleast_1d(v)) != total for v in outputs.values()):
        return total
    per_row = sum(int(v[0].size) for v in feeds.values() if len(v)) or 1
    rows = min(total, max(MIN_CHECK_ROWS, MAX_CHECK_ELEMENTS // per_row))
    step = batch or 1
    return min(total, -(-rows // step) * step)
