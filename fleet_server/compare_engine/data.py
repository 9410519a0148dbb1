"""The inputs both versions run on: an ``.npz`` (``x``, optional ``y``) or an image folder
(sub-folder names are the labels), read by the converter's calibration reader with each
version's own preprocessing, and optional labels from a file (one per row, in stream order).

Each version gets its own reader over the same source, streamed in lockstep, so two versions
with different preprocessing (a retrained model with a new input size) still see the same
inputs. Labels are class names: an integer ``y`` is mapped through the model's labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.contract import Manifest
from fleet_server.compare_engine.errors import CompareError

#: A labels file larger than this is refused before it is read.
MAX_LABELS_BYTES = 16 * 1024 * 1024
#: Longest label kept (a longer line is refused).
MAX_LABEL_CHARS = 200


@dataclass(frozen=True)
class Rows:
    """One batch: each version's feeds (row-aligned), and the rows' true labels if known."""

    start: int
    feeds_a: dict[str, Any]
    feeds_b: dict[str, Any]
    labels: list[str] | None


@dataclass(frozen=True)
class DataSet:
    kind: str  # "npz" or "images"
    name: str
    sha256: str
    samples: int
    names: list[str]
    labelled: bool
    reader_a: Any
    reader_b: Any
    file_labels: list[str] | None
    classes: list[str]

    def batches(self, *, limit: int) -> Iterator[Rows]:
        start = 0
        stream_b = self.reader_b.batches(limit=limit)
        for batch_a in self.reader_a.batches(limit=limit):
            batch_b = next(stream_b, None)
            if batch_b is None:
                raise CompareError(f"data {self.name}: the two readers fell out of step")
            rows = len(next(iter(batch_a.inputs.values())))
            yield Rows(
                start=start,
                feeds_a=batch_a.inputs,
                feeds_b=batch_b.inputs,
                labels=self._rows_labels(batch_a.labels, start, rows),
            )
            start += rows

    def _rows_labels(self, raw: Any, start: int, rows: int) -> list[str] | None:
        if self.file_labels is not None:
            return self.file_labels[start : start + rows]
        if raw is None:
            return None
        values = list(raw.tolist())
        if len(values) != rows:
            raise CompareError(f"data {self.name}: y has fewer rows than x")
        return [_label_name(v, self.classes, self.name) for v in values]


def _label_name(value: Any, classes: list[str], source: str) -> str:
    if isinstance(value, str):
        return value[:MAX_LABEL_CHARS]
    if isinstance(value, float) and not value.is_integer():
        raise CompareError(f"data {source}: y holds {value!r}, not a class index")
    index = int(value)
    if classes and not 0 <= index < len(classes):
        raise CompareError(f"data {source}: y holds class {index}; the model has {len(classes)}")
    return classes[index] if classes else str(index)


def open_data(
    path: Path, *, manifest_a: Manifest, manifest_b: Manifest, labels_file: Path | None
) -> DataSet:
    """Open ``path`` once per version (checked against its inputs); CompareError if unusable."""
    from converters.calibration import open_calibration
    from converters.errors import InputError

    try:
        set_a = open_calibration(
            path,
            inputs=list(manifest_a.inputs),
            preprocessing=manifest_a.preprocessing,
            labels=list(manifest_a.labels) or None,
        )
        set_b = open_calibration(
            path,
            inputs=list(manifest_b.inputs),
            preprocessing=manifest_b.preprocessing,
            labels=list(manifest_b.labels) or None,
        )
        names = set_a.row_names()
    except InputError as err:
        raise CompareError(str(err).replace("calibration data", "data", 1)) from err
    except (OSError, ValueError) as err:
        raise CompareError(f"data {path.name}: {err}") from err
    labels = read_labels(labels_file, rows=set_a.samples) if labels_file is not None else None
    classes = list(manifest_a.labels) or set_a.class_names
    return DataSet(
        kind=set_a.kind,
        name=path.name or str(path),
        sha256=set_a.sha256,
        samples=set_a.samples,
        names=names,
        labelled=labels is not None or set_a.has_labels,
        reader_a=set_a,
        reader_b=set_b,
        file_labels=labels,
        classes=classes,
    )


def read_labels(path: Path, *, rows: int) -> list[str]:
    """One label per line (UTF-8), as many lines as the data has rows."""
    from converters.errors import InputError
    from converters.inputs import read_limited

    try:
        raw = read_limited(path, what="labels", max_bytes=MAX_LABELS_BYTES)
    except InputError as err:
        raise CompareError(str(err)) from err
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise CompareError(f"labels {path.name} is not UTF-8 text") from err
    labels = [line.strip() for line in lines if line.strip()]
    if len(labels) != rows:
        raise CompareError(f"labels {path.name} has {len(labels)} labels for {rows} rows")
    if any(len(label) > MAX_LABEL_CHARS for label in labels):
        raise CompareError(f"labels {path.name}: a label is longer than {MAX_LABEL_CHARS}")
    return labels
