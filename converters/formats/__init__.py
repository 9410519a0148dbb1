"""Artifact formats: one module per format, a hand-written registry, and the routing of a source
(by its suffix and ``--format``) to a format and a source kind.

Add a format by writing a module with an :class:`ArtifactFormat` (see :mod:`.base`), one line in
:data:`FORMATS`, and its sources in :func:`route`; add a source framework to ONNX with a loader
(:mod:`converters.sources`).
"""

from __future__ import annotations

from pathlib import Path

from converters.errors import InputError
from converters.formats.base import ArtifactFormat, FormatRun
from converters.formats.onnx import OnnxFormat
from converters.formats.tflite import TfliteFormat
from converters.options import ConvertOptions
from converters.sources import loader_for
from converters.sources.keras_source import KerasLoader

__all__ = ["FORMATS", "ArtifactFormat", "FormatRun", "route"]

#: ``--format`` value → format (hand-written registry).
FORMATS: dict[str, ArtifactFormat] = {
    OnnxFormat.key: OnnxFormat(),
    TfliteFormat.key: TfliteFormat(),
}

#: Sources that become TFLite artifacts by default (suffix → kind); everything else goes through
#: ONNX. ``--format onnx`` takes a Keras model or SavedModel through tf2onnx instead.
TFLITE_SOURCES = {".keras": "keras", ".h5": "keras", ".tflite": "tflite"}
#: Sources another tool turns into TFLite (suffix → kind): onnx2tf, litert-torch.
TO_TFLITE = {".onnx": "onnx", ".pt": "pytorch", ".pth": "pytorch", ".pt2": "pytorch"}


def check_format(source: Path, tflite_kind: str | None, options: ConvertOptions) -> None:
    """--format must be one the tool chain can make from this source (``all`` is the CLI's:
    it runs one conversion per format)."""
    wanted = options.format
    if wanted is None or wanted == "all":
        return
    if tflite_kind == "tflite" and wanted != "tflite":
        raise InputError(
            f"--format {wanted}: {source.name} is a TFLite model already; pass --format tflite"
        )
    if tflite_kind is None and wanted == "tflite" and source.suffix.lower() not in TO_TFLITE:
        raise InputError(
            f"--format tflite: {source.name} converts to ONNX only (convert it to .onnx first, "
            "then ONNX → TFLite goes through onnx2tf); pass --format onnx"
        )


def route(source: Path, options: ConvertOptions) -> tuple[ArtifactFormat, str]:
    """The format ``source`` becomes and its source kind (InputError for an unsupported one)."""
    suffix = source.suffix.lower()
    tflite_kind = TFLITE_SOURCES.get(suffix)
    if source.is_dir() and (source / "saved_model.pb").is_file():
        tflite_kind = "savedmodel"
    check_format(source, tflite_kind, options)
    if tflite_kind is not None:
        if options.format == "onnx":
            return FORMATS["onnx"], KerasLoader.kind  # tf2onnx, for Keras and SavedModel
        return FORMATS["tflite"], tflite_kind
    if options.format == "tflite":
        return FORMATS["tflite"], TO_TFLITE[suffix]
    return FORMATS["onnx"], loader_for(source).kind
