"""Source loaders: one per framework, chosen by the source file's suffix.

A loader turns a trained model file into an ONNX model plus a *reference*: the source
framework's own prediction function, which the validators compare the ONNX model against.
Add a framework by writing a module with a :class:`SourceLoader` and one line in
:data:`LOADERS`; no discovery magic. Loaders import their frameworks inside ``load``.
"""

from __future__ import annotations

from pathlib import Path

from converters.errors import InputError
from converters.sources.base import LoadedModel, Reference, SourceLoader
from converters.sources.onnx_source import OnnxLoader
from converters.sources.sklearn_source import SklearnLoader
from converters.sources.torch_source import TorchLoader

__all__ = ["LOADERS", "LoadedModel", "Reference", "SourceLoader", "loader_for"]

#: kind → loader (hand-written registry).
LOADERS: dict[str, SourceLoader] = {
    SklearnLoader.kind: SklearnLoader(),
    OnnxLoader.kind: OnnxLoader(),
    TorchLoader.kind: TorchLoader(),
}


def loader_for(path: Path) -> SourceLoader:
    """The loader whose suffixes match ``path``, or one line naming the supported kinds."""
    suffix = path.suffix.lower()
    for loader in LOADERS.values():
        if suffix in loader.suffixes:
            return loader
    supported = ", ".join(f"{k} ({'/'.join(v.suffixes)})" for k, v in LOADERS.items())
    raise InputError(f"unsupported source {path.name!r}: supported kinds are {supported}")
