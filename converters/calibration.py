"""Calibration data, streamed: an ``.npz`` (``x`` or ``x/<input>``, optional ``y``) or an image
folder (flat, or one sub-folder per class, which gives labels), preprocessed by the manifest's
:class:`~edgefleet.contract.Preprocessing` recipe with OpenCV.

A :class:`CalibrationSet` is opened once (checked against the model's inputs on its first rows,
hashed) and then read any number of times; each read streams batches of at most ``batch_rows``
rows, so memory does not grow with the size of the set. :meth:`CalibrationSet.reader` wraps a
read as onnxruntime's ``CalibrationDataReader`` (one row per ``get_next``).
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.errors import InputError, one_line
from converters.evaldata import X_KEY, Y_KEY, conform
from converters.preprocess import IMAGE_SUFFIXES, load_image
from edgefleet.contract import Preprocessing, TensorSpec

#: Upper bound on calibration images / rows read.
MAX_CALIBRATION_ROWS = 100_000


@dataclass(frozen=True)
class Batch:
    """Rows of every input (row-aligned) and their labels when the set has them."""

    inputs: dict[str, Any]
    labels: Any | None


@dataclass(frozen=True)
class CalibrationSet:
    """A checked calibration source that can be streamed repeatedly."""

    path: Path
    kind: str
    samples: int
    sha256: str
    has_labels: bool
    inputs: list[TensorSpec]
    class_names: list[str] = field(default_factory=list)
    preprocessing: Preprocessing | None = None
    batch_rows: int = 64

    def batches(self, *, limit: int | None = None) -> Iterator[Batch]:
        """Stream the set (at most ``limit`` rows) in batches of ``batch_rows``."""
        source = _npz_batches if self.kind == "npz" else _image_batches
        yielded = 0
        for batch in source(self):
            rows = len(next(iter(batch.inputs.values())))
            if limit is not None and yielded + rows > limit:
                keep = limit - yielded
                if keep <= 0:
                    return
                batch = Batch(
                    {k: v[:keep] for k, v in batch.inputs.items()},
                    None if batch.labels is None else batch.labels[:keep],
                )
                rows = keep
            yielded += rows
            yield batch
            if limit is not None and yielded >= limit:
                return

    def reader(self, *, limit: int | None = None) -> Any:
        """An onnxruntime ``CalibrationDataReader`` over this set, one row per call."""
        from onnxruntime.quantization import CalibrationDataReader

        calib = self

        class _Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self) -> None:
                self._rows = calib._rows(limit)

            def get_next(self) -> dict[str, Any] | None:
                return next(self._rows, None)

            def rewind(self) -> None:
                self._rows = calib._rows(limit)

        return _Reader()

    def row_names(self) -> list[str]:
        """A name per row, in stream order: the image's path under the folder, or 'row N'."""
        if self.kind != "images":
            return [f"row {i}" for i in range(self.samples)]
        files, _ = _image_files(self.path, self.class_names or None)
        return [p.relative_to(self.path).as_posix() for p, _ in files[:MAX_CALIBRATION_ROWS]]

    def rows(self, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Single rows (batch 1) of every input, streamed."""
        return self._rows(limit)

    def _rows(self, limit: int | None) -> Iterator[dict[str, Any]]:
        for batch in self.batches(limit=limit):
            rows = len(next(iter(batch.inputs.values())))
            for i in range(rows):
                yield {k: v[i : i + 1] for k, v in batch.inputs.items()}


def open_calibration(
    path: Path,
    *,
    inputs: list[TensorSpec],
    preprocessing: Preprocessing | None,
    labels: list[str] | None = None,
    batch_rows: int = 64,
) -> CalibrationSet:
    """Check ``path`` against the model inputs (first batch), count and hash it."""
    if path.is_dir():
        calib = _open_images(path, inputs, preprocessing, labels, batch_rows)
    elif path.is_file():
        if path.suffix.lower() != ".npz":
            raise InputError(f"calibration data {path.name}: expected an .npz or an image folder")
        calib = _open_npz(path, inputs, batch_rows)
    else:
        raise InputError(f"calibration data {path}: no such file or directory")
    first = next(calib.batches(limit=batch_rows), None)
    if first is None or calib.samples == 0:
        raise InputError(f"calibration data {path.name} is empty (0 rows)")
    return calib


def peek_row_shape(path: Path, *, preprocessing: Preprocessing | None) -> list[int]:
    """The shape of one calibration row (``x`` of an .npz, or one preprocessed image)."""
    if path.is_dir():
        if preprocessing is None:
            raise InputError(f"calibration folder {path.name} needs --preprocessing")
        files, _ = _image_files(path)
        if not files:
            raise InputError(f"calibration folder {path.name} holds no images (0 rows)")
        return list(load_image(files[0][0], preprocessing).shape)
    try:
        with zipfile.ZipFile(path) as archive, archive.open(_member(X_KEY)) as stream:
            shape, _ = _npy_header(stream, what=f"calibration {path.name}:x")
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise InputError(f"calibration data {path.name}: no readable array 'x'") from err
    if len(shape) < 2:
        raise InputError(f"calibration data {path.name}: x has shape {list(shape)}")
    return list(shape[1:])


def peek_row_shapes(
    path: Path, *, names: list[str], preprocessing: Preprocessing | None
) -> dict[str, list[int]]:
    """Each input's row shape (dims after the first) in an .npz's headers or one image; {}
    when the file holds no array for them (the readers report that later, with context)."""
    if path.is_dir():
        if preprocessing is None or len(names) != 1:
            return {}
        files, _ = _image_files(path)
        return {names[0]: list(load_image(files[0][0], preprocessing).shape)} if files else {}
    if not path.is_file() or path.suffix.lower() != ".npz":
        return {}
    keys = {name: X_KEY if len(names) == 1 else f"{X_KEY}/{name}" for name in names}
    shapes: dict[str, list[int]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            present = set(archive.namelist())
            for name, key in keys.items():
                if _member(key) not in present:
                    continue
                with archive.open(_member(key)) as stream:
                    shape, _ = _npy_header(stream, what=f"{path.name}:{key}")
                if len(shape) >= 1:
                    shapes[name] = list(shape[1:])
    except (OSError, zipfile.BadZipFile):
        return {}
    return shapes


# -- .npz, streamed member by member ----------------------------------------------------------


def _npy_header(stream: Any, *, what: str) -> tuple[tuple[int, ...], Any]:
    import numpy as np
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = npy.read_array_header_2_0(stream)
    except ValueError as err:
        raise InputError(f"{what} is not a readable .npy array: {one_line(err)}") from err
    if fortran and len(shape) > 1:
        raise InputError(f"{what} is stored in Fortran order; save it C-contiguous")
    if dtype.hasobject:
        raise InputError(f"{what} holds Python objects; only number arrays are read")
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _member(name: str) -> str:
    return f"{name}.npy"


def _open_npz(path: Path, inputs: list[TensorSpec], batch_rows: int) -> CalibrationSet:
    from edgefleet.artifact import hash_file

    single = len(inputs) == 1
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            counts = set()
            for spec in inputs:
                key = X_KEY if single else f"{X_KEY}/{spec.name}"
                if _member(key) not in names:
                    raise InputError(f"calibration data {path.name} lacks array {key!r}")
                with archive.open(_member(key)) as stream:
                    shape, _ = _npy_header(stream, what=f"calibration {path.name}:{key}")
                if not shape:
                    raise InputError(f"calibration data {path.name}: {key} is a scalar")
                counts.add(shape[0])
            has_labels = _member(Y_KEY) in names
    except (OSError, zipfile.BadZipFile) as err:
        raise InputError(f"calibration data {path.name} is not a readable .npz: {err}") from err
    if len(counts) != 1:
        raise InputError(f"calibration data {path.name}: inputs have different numbers of rows")
    samples = min(counts.pop(), MAX_CALIBRATION_ROWS)
    return CalibrationSet(
        path=path,
        kind="npz",
        samples=samples,
        sha256=hash_file(path)[0],
        has_labels=has_labels,
        inputs=inputs,
        batch_rows=batch_rows,
    )


def _stream_member(archive: zipfile.ZipFile, key: str, rows: int, *, what: str) -> Iterator[Any]:
    import numpy as np

    with archive.open(_member(key)) as stream:
        shape, dtype = _npy_header(stream, what=what)
        row_items = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        total = min(shape[0], MAX_CALIBRATION_ROWS)
        for start in range(0, total, rows):
            count = min(rows, total - start)
            raw = stream.read(count * row_items * dtype.itemsize)
            if len(raw) != count * row_items * dtype.itemsize:
                raise InputError(f"{what} is truncated")
            yield np.frombuffer(raw, dtype=dtype).reshape((count, *shape[1:]))


def _npz_batches(calib: CalibrationSet) -> Iterator[Batch]:
    single = len(calib.inputs) == 1
    name = calib.path.name
    try:
        with zipfile.ZipFile(calib.path) as archive:
            streams = {
                spec.name: _stream_member(
                    archive,
                    X_KEY if single else f"{X_KEY}/{spec.name}",
                    calib.batch_rows,
                    what=f"calibration {name}",
                )
                for spec in calib.inputs
            }
            labels = (
                _stream_member(archive, Y_KEY, calib.batch_rows, what=f"calibration {name}:y")
                if calib.has_labels
                else None
            )
            specs = {s.name: s for s in calib.inputs}
            while True:
                chunk = {k: next(s, None) for k, s in streams.items()}
                if any(v is None for v in chunk.values()):
                    return
                feeds = {
                    k: conform(v, specs[k], key=k, what=f"calibration data {name}")
                    for k, v in chunk.items()
                }
                y = next(labels, None) if labels is not None else None
                yield Batch(feeds, None if y is None else y.reshape(-1))
    except (OSError, zipfile.BadZipFile) as err:
        raise InputError(f"calibration data {name} is not readable: {one_line(err)}") from err


# -- image folders ------------------------------------------------------------------------------


def _image_files(
    folder: Path, labels: list[str] | None = None
) -> tuple[list[tuple[Path, int | None]], list[str]]:
    """(file, class index) pairs in a stable order, and the class names (sub-folders).

    A class index is the sub-folder's position in the model's ``labels`` when it has them,
    else in the sorted sub-folder names.
    """
    top = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if top or not classes:
        return [(p, None) for p in top], []
    files: list[tuple[Path, int | None]] = []
    for position, name in enumerate(classes):
        index = labels.index(name) if labels and name in labels else position
        for p in sorted((folder / name).iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                files.append((p, index))
    return files, classes


def _folder_sha256(files: list[tuple[Path, int | None]], folder: Path) -> str:
    digest = hashlib.sha256()
    for path, _ in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\x00")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\x00")
    return digest.hexdigest()


def _open_images(
    folder: Path,
    inputs: list[TensorSpec],
    pre: Preprocessing | None,
    labels: list[str] | None,
    batch_rows: int,
) -> CalibrationSet:
    if pre is None:
        raise InputError(f"calibration folder {folder.name} needs --preprocessing (image → tensor)")
    if len(inputs) != 1:
        raise InputError("an image folder can only calibrate a model with one input")
    files, classes = _image_files(folder, labels)
    files = files[:MAX_CALIBRATION_ROWS]
    if not files:
        raise InputError(f"calibration folder {folder.name} holds no images (0 rows)")
    if classes and labels and not set(classes) <= set(labels):
        unknown = sorted(set(classes) - set(labels))[:5]
        raise InputError(f"calibration folder {folder.name}: sub-folders {unknown} are not labels")
    return CalibrationSet(
        path=folder,
        kind="images",
        samples=len(files),
        sha256=_folder_sha256(files, folder),
        has_labels=bool(classes),
        inputs=inputs,
        class_names=list(labels) if labels else classes,
        preprocessing=pre,
        batch_rows=batch_rows,
    )


def _image_batches(calib: CalibrationSet) -> Iterator[Batch]:
    import numpy as np

    assert calib.preprocessing is not None  # checked in _open_images
    files, classes = _image_files(calib.path, calib.class_names or None)
    files = files[:MAX_CALIBRATION_ROWS]
    spec = calib.inputs[0]
    for start in range(0, len(files), calib.batch_rows):
        chunk = files[start : start + calib.batch_rows]
        rows = [load_image(p, calib.preprocessing) for p, _ in chunk]
        x = conform(np.stack(rows), spec, key="images", what=f"calibration data {calib.path.name}")
        labels = np.asarray([c for _, c in chunk], dtype=np.int64) if classes else None
        yield Batch({spec.name: x}, labels)
