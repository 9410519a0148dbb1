"""An ``.onnx`` file's graph inputs and outputs, read from the protobuf wire format without
``onnx`` or onnxruntime (neither is a server dependency).

Only ``ModelProto.graph`` is walked: its inputs, outputs and the names of its initializers (an
input that is also an initializer is a weight, IR < 4); node and weight payloads are skipped by
their length, never decoded. The file is memory-mapped, every length is checked against its
enclosing message, and the walk stops after :data:`MAX_FIELDS` fields, so a truncated, huge or
hostile file is one :class:`ModelIOError`. Field numbers are those of ``onnx.proto``.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fleet_server.services.model_io.base import ModelIO, ModelIOError, TensorIO

#: ``TensorProto.DataType`` → numpy-style dtype name.
_TYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
    14: "complex64", 15: "complex128", 16: "bfloat16", 21: "uint4", 22: "int4",
}  # fmt: skip
#: Fields read in all before the file is refused (a real 100 MB detector: ~20,000).
MAX_FIELDS = 2_000_000
MAX_RANK = 64
MAX_NAME = 4096
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class _Wire:
    def __init__(self, data: Any) -> None:
        self.data = data
        self.limit = self.budget = MAX_FIELDS

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise ModelIOError("corrupt ONNX file (a varint runs past its message)")
            byte = self.data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, pos
            shift += 7

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(field number, wire type, value or start, end) of each field in ``[start, end)``."""
        pos = start
        while pos < end:
            self.budget -= 1
            if self.budget < 0:
                raise ModelIOError(f"ONNX graph has more than {self.limit} entries")
            key, pos = self.varint(pos, end)
            number, kind = key >> 3, key & 7
            if kind == _VARINT:
                value, pos = self.varint(pos, end)
                yield number, kind, value, pos
            elif kind == _LENGTH:
                length, pos = self.varint(pos, end)
                if pos + length > end:
                    raise ModelIOError("truncated ONNX file (a field runs past its message)")
                yield number, kind, pos, pos + length
                pos += length
            elif kind in (_FIXED64, _FIXED32):
                pos += 8 if kind == _FIXED64 else 4
                if pos > end:
                    raise ModelIOError("truncated ONNX file")
            else:
                raise ModelIOError(f"not an ONNX model (protobuf wire type {kind})")

    def one(self, start: int, end: int, number: int) -> tuple[int, int] | None:
        """The span of the last length-delimited field ``number`` (protobuf: last one wins)."""
        found = None
        for field, kind, a, b in self.fields(start, end):
            if field == number and kind == _LENGTH:
                found = (a, b)
        return found

    def text(self, span: tuple[int, int]) -> str:
        if span[1] - span[0] > MAX_NAME:
            raise ModelIOError(f"ONNX name longer than {MAX_NAME} bytes")
        return bytes(self.data[span[0] : span[1]]).decode("utf-8", "replace")


def _value_info(wire: _Wire, start: int, end: int) -> TensorIO:
    """``ValueInfoProto``: name (1), type (2) → ``TypeProto.tensor_type`` (1) → elem_type (1),
    shape (2) → dims (1) each with dim_value (1) or dim_param (2)."""
    name = wire.one(start, end, 1)
    kind = wire.one(start, end, 2)
    tensor = wire.one(*kind, 1) if kind else None
    if tensor is None:
        return TensorIO(name=wire.text(name) if name else "", dtype=None, shape=None)
    elem = next((v for f, k, v, _ in wire.fields(*tensor) if f == 1 and k == _VARINT), 0)
    shape_span = wire.one(*tensor, 2)
    shape: list[int | None] | None = None
    if shape_span is not None:
        shape = []
        for field, k, a, b in wire.fields(*shape_span):
            if field != 1 or k != _LENGTH:
                continue
            if len(shape) >= MAX_RANK:
                raise ModelIOError(f"ONNX tensor with more than {MAX_RANK} dims")
            value = next((v for f, kk, v, _ in wire.fields(a, b) if f == 1 and kk == _VARINT), 0)
            shape.append(value if 0 < value < 2**63 else None)
    return TensorIO(
        name=wire.text(name) if name else "",
        dtype=_TYPES.get(elem, f"onnx type {elem}"),
        shape=shape,
    )


def read_onnx(path: Path) -> ModelIO:
    """The graph's inputs (weights excluded) and outputs, as the file declares them."""
    size = path.stat().st_size
    if size == 0:
        raise ModelIOError("not an ONNX model (the file is empty)")
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        wire = _Wire(data)
        graph = wire.one(0, size, 7)  # ModelProto.graph
        if graph is None:
            raise ModelIOError("not an ONNX model (no graph)")
        weights: set[str] = set()
        inputs, outputs = [], []
        for field, kind, a, b in wire.fields(*graph):
            if kind != _LENGTH:
                continue
            if field == 5:  # initializer: TensorProto.name (8)
                name = wire.one(a, b, 8)
                if name is not None:
                    weights.add(wire.text(name))
            elif field == 11:
                inputs.append(_value_info(wire, a, b))
            elif field == 12:
                outputs.append(_value_info(wire, a, b))
    return ModelIO(inputs=[i for i in inputs if i.name not in weights], outputs=outputs)
