"""A float TFLite model another tool made (onnx2tf, litert-torch), with the source's own
prediction to validate it against: what :class:`converters.formats.tflite.TfliteRun`
takes instead of converting a Keras model itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgefleet.contract.manifest import Framework

#: The source's first output on feeds given in the TFLite model's input order.
FirstOutput = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Prebuilt:
    model: bytes
    framework: Framework
    reference: FirstOutput
    #: Inputs the tool turned from NCHW to NHWC (the data and manifest follow them).
    nhwc: tuple[str, ...] = ()
