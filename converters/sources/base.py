"""What a source loader returns, and the Protocol every loader implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from converters.options import ConvertOptions, ConvertTask
from edgefleet.contract.manifest import Framework

if TYPE_CHECKING:
    from onnx import ModelProto

#: Named arrays in, named arrays out: how the source framework itself predicts.
Reference = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass
class LoadedModel:
    """A source model brought to ONNX, with what the source knows about itself."""

    framework: Framework
    onnx_model: ModelProto
    reference: Reference
    task: ConvertTask
    framework_version: str | None = None
    labels: list[str] = field(default_factory=list)
    #: Class values in probability-column order, compared with eval labels (classifiers).
    class_values: Any | None = None
    tools: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class SourceLoader(Protocol):
    """Loads one kind of model file into a :class:`LoadedModel`."""

    #: Registry key and the name users see, e.g. 'sklearn'.
    kind: str
    #: File suffixes (lower case, with the dot) this loader accepts.
    suffixes: tuple[str, ...]
    #: Top-level modules the loader imports, checked before any input is read so a missing
    #: extra is reported as such (ModuleNotFoundError → the CLI names the extra).
    modules: tuple[str, ...]

    def load(self, path: Path, *, options: ConvertOptions) -> LoadedModel: ...
