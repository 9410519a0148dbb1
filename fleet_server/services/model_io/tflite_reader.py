"""A ``.tflite`` file's inputs and outputs, read from its flatbuffer without LiteRT.

Only the main subgraph's input and output tensors are read (name, type, shape signature):
nothing is allocated from a size the file declares, every offset is checked against the file,
and the file is memory-mapped, so a 1 GB model costs no memory and a truncated or hostile one
is one :class:`ModelIOError`. Field numbers are those of TensorFlow Lite's ``schema.fbs``.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from fleet_server.services.model_io.base import ModelIO, ModelIOError, TensorIO

#: ``schema.fbs`` ``TensorType`` → numpy-style dtype name.
_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
}  # fmt: skip
#: Inputs or outputs a subgraph may list; dims a tensor may have.
MAX_IO = 4096
MAX_RANK = 64
MAX_NAME = 4096
# Table field numbers (schema.fbs).
_MODEL_SUBGRAPHS = 2
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS = 0, 1, 2
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_NAME, _TENSOR_SIGNATURE = 0, 1, 3, 7


class _Flat:
    """Bounds-checked reads from a flatbuffer."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.size = len(data)

    def read(self, fmt: str, pos: int) -> int:
        width = struct.calcsize(fmt)
        if pos < 0 or pos + width > self.size:
            raise ModelIOError("truncated TFLite file (an offset points outside it)")
        value: int = struct.unpack_from(fmt, self.data, pos)[0]
        return value

    def table(self, pos: int) -> _Table:
        vtable = pos - self.read("<i", pos)
        length = self.read("<H", vtable)
        if length < 4 or length % 2:
            raise ModelIOError("corrupt TFLite file (bad vtable)")
        self.read("<H", vtable + length - 2)
        return _Table(self, pos, vtable, (length - 4) // 2)


class _Table:
    def __init__(self, flat: _Flat, pos: int, vtable: int, fields: int) -> None:
        self.flat, self.pos, self.vtable, self.fields = flat, pos, vtable, fields

    def _field(self, index: int) -> int | None:
        if index >= self.fields:
            return None
        offset = self.flat.read("<H", self.vtable + 4 + 2 * index)
        return self.pos + offset if offset else None

    def scalar(self, index: int, fmt: str, default: int) -> int:
        at = self._field(index)
        return default if at is None else self.flat.read(fmt, at)

    def _ref(self, index: int) -> int | None:
        at = self._field(index)
        return None if at is None else at + self.flat.read("<I", at)

    def vector(self, index: int, *, width: int, limit: int, what: str) -> tuple[int, int]:
        """(first element's position, length) of a vector field; (0, 0) when absent."""
        at = self._ref(index)
        if at is None:
            return 0, 0
        length = self.flat.read("<I", at)
        if length > limit:
            raise ModelIOError(f"TFLite {what} lists {length} entries (limit {limit})")
        if at + 4 + length * width > self.flat.size:
            raise ModelIOError(f"truncated TFLite file ({what})")
        return at + 4, length

    def ints(self, index: int, *, limit: int, what: str) -> list[int] | None:
        """An int32 vector field; None when the table does not have it."""
        if self._field(index) is None:
            return None
        start, length = self.vector(index, width=4, limit=limit, what=what)
        return [self.flat.read("<i", start + 4 * i) for i in range(length)]

    def string(self, index: int) -> str:
        start, length = self.vector(index, width=1, limit=MAX_NAME, what="tensor name")
        return bytes(self.flat.data[start : start + length]).decode("utf-8", "replace")

    def table_at(self, index: int, element: int, *, limit: int, what: str) -> _Table:
        start, length = self.vector(index, width=4, limit=limit, what=what)
        if element >= length:
            raise ModelIOError(f"TFLite {what}: index {element} out of range ({length})")
        slot = start + 4 * element
        return self.flat.table(slot + self.flat.read("<I", slot))


def _tensor(subgraph: _Table, index: int) -> TensorIO:
    tensor = subgraph.table_at(_SUBGRAPH_TENSORS, index, limit=2**31, what="subgraph tensors")
    kind = tensor.scalar(_TENSOR_TYPE, "<b", 0)
    shape = tensor.ints(_TENSOR_SHAPE, limit=MAX_RANK, what="tensor shape")
    signature = tensor.ints(_TENSOR_SIGNATURE, limit=MAX_RANK, what="tensor shape signature")
    dims = signature if signature is not None else shape
    return TensorIO(
        name=tensor.string(_TENSOR_NAME),
        dtype=_TYPES.get(kind, f"tflite type {kind}"),
        shape=None if dims is None else [d if d > 0 else None for d in dims],
    )


def read_tflite(path: Path) -> ModelIO:
    """The main subgraph's inputs and outputs, as the file declares them."""
    with path.open("rb") as f:
        if path.stat().st_size < 8:
            raise ModelIOError("not a TFLite model (the file is too short)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if bytes(data[4:8]) != b"TFL3":
                raise ModelIOError("not a TFLite model (no 'TFL3' file identifier)")
            flat = _Flat(data)
            model = flat.table(flat.read("<I", 0))
            subgraph = model.table_at(_MODEL_SUBGRAPHS, 0, limit=2**16, what="subgraphs")
            ends = []
            for field in (_SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS):
                indices = subgraph.ints(field, limit=MAX_IO, what="subgraph inputs/outputs")
                ends.append([_tensor(subgraph, i) for i in indices or []])
    return ModelIO(inputs=ends[0], outputs=ends[1])
