"""The artifact manifest: ``manifest.json`` beside the model files of every artifact.

One manifest describes one model version in one format and precision: its files (with
SHA-256 and size), its tensors, how to preprocess an image for it, what its outputs mean, how
it was made and measured, a self-test the device runs before serving it, reference statistics
for drift detection, and an Ed25519 signature over all of the above.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, field

from edgefleet.contract.common import (
    ModelName,
    ModelRef,
    ModelVersion,
    Sha256Hex,
    Strict,
)
from edgefleet.contract.parsing import canonical_json, load_json_object, migrate, validate
from edgefleet.contract.postprocess import TASK_OF_LAYOUT, Postprocess, layout_of, output_names

#: The manifest's own schema version. Contract version 2 changed payloads only, so manifests
#: stay at 1: an artifact converted today still loads on a version-1 agent, and its signature
#: covers the same bytes.
MANIFEST_SCHEMA_VERSION: Final = 1

#: A manifest larger than this is refused before it is parsed.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: The largest single file an artifact may list (a Pi-class model is far smaller).
MAX_FILE_BYTES = 2 * 1024**3
MANIFEST_FILE = "manifest.json"

Dtype = Literal["float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"]
Format = Literal["onnx", "tflite"]
Precision = Literal["fp32", "fp16", "int8", "mixed"]
Task = Literal["classification", "detection", "segmentation", "regression", "raw"]
Framework = Literal["sklearn", "onnx", "pytorch", "keras", "tflite"]


def _safe_relative_path(value: str) -> str:
    """A file name inside the artifact directory: relative, POSIX, no '..', no hidden tricks."""
    if not value or len(value) > 255:
        raise ValueError("path must be 1-255 characters")
    if "\\" in value or "\x00" in value or value.startswith("/"):
        raise ValueError(f"path {value!r} must be relative and use '/'")
    parts = PurePosixPath(value).parts
    if any(p in ("..", ".", "") for p in parts) or value != "/".join(parts):
        raise ValueError(f"path {value!r} must not contain '.', '..' or empty segments")
    if value == MANIFEST_FILE:
        raise ValueError("the manifest does not list itself")
    return value


class QuantParams(Strict, frozen=True, kw_only=True):
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``."""

    scale: Annotated[list[float], Meta(min_length=1, description="One scale, or one per channel.")]
    zero_point: Annotated[list[int], Meta(min_length=1, description="Same length as scale.")]
    axis: Annotated[int, Meta(description="Channel axis for per-channel params.")] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.scale) != len(self.zero_point):
            raise ValueError("scale and zero_point must have the same length")
        if len(self.scale) > 1 and self.axis is None:
            raise ValueError("per-channel params need an axis")
        if any(s <= 0 for s in self.scale):
            raise ValueError("scales must be positive")


#: A static dimension is >= 1; a dynamic one is named (e.g. 'batch').
Dim = (
    Annotated[int, Meta(ge=1, description="A static dimension (>= 1).")]
    | Annotated[str, Meta(min_length=1, max_length=64, description="A dynamic dimension's name.")]
)


class TensorSpec(Strict, frozen=True, kw_only=True):
    """A model input or output."""

    name: Annotated[
        str, Meta(min_length=1, max_length=256, description="Tensor name in the graph.")
    ]
    shape: Annotated[
        list[Dim],
        Meta(
            max_length=8,
            description="Dimensions; a string names a dynamic dimension (e.g. 'batch').",
        ),
    ]
    dtype: Annotated[Dtype, Meta(description="Element type.")]
    quantization: (
        Annotated[QuantParams, Meta(description="Present when the tensor is quantized.")] | None
    ) = None


class ResizeSpec(Strict, frozen=True, kw_only=True):
    """How an image is brought to the model's input size."""

    width: Annotated[int, Meta(ge=1, le=8192, description="Target width in pixels.")]
    height: Annotated[int, Meta(ge=1, le=8192, description="Target height in pixels.")]
    mode: Annotated[
        Literal["stretch", "letterbox"],
        Meta(description="'letterbox' keeps the aspect ratio and pads."),
    ] = "stretch"
    interpolation: Annotated[
        Literal["linear", "nearest", "area", "cubic"], Meta(description="OpenCV interpolation.")
    ] = "area"
    pad_value: Annotated[int, Meta(ge=0, le=255, description="Letterbox padding value.")] = 114


class Preprocessing(Strict, frozen=True, kw_only=True):
    """Image → tensor: ``x = (pixel * scale - mean) / std`` per channel, then layout and dtype.

    Images are decoded as 8-bit; ``color`` is the channel order the model expects.
    """

    color: Annotated[
        Literal["rgb", "bgr", "gray"], Meta(description="Channel order the model expects.")
    ] = "rgb"
    resize: Annotated[ResizeSpec, Meta(description="None: the image is used as is.")] | None = None
    scale: Annotated[float, Meta(gt=0, description="Applied to raw 0-255 pixels first.")] = 1 / 255
    mean: Annotated[list[float], Meta(description="Per channel; empty for none.")] = field(
        default_factory=list
    )
    std: Annotated[list[float], Meta(description="Per channel; empty for none.")] = field(
        default_factory=list
    )
    invert: Annotated[bool, Meta(description="Use 255 - pixel (dark-on-light → light).")] = False
    layout: Annotated[
        Literal["nchw", "nhwc", "flat"],
        Meta(description="'flat' flattens each image to one row (classic ML models)."),
    ] = "nchw"
    dtype: Annotated[Dtype, Meta(description="Element type of the tensor.")] = "float32"

    def __post_init__(self) -> None:
        super().__post_init__()
        channels = 1 if self.color == "gray" else 3
        for label, values in (("mean", self.mean), ("std", self.std)):
            if values and len(values) not in (1, channels):
                raise ValueError(f"{label} needs 1 or {channels} values for color={self.color}")
        if any(s == 0 for s in self.std):
            raise ValueError("std values must be non-zero")


class ModelFile(Strict, frozen=True, kw_only=True):
    """One file of the artifact, relative to the manifest."""

    path: Annotated[str, Meta(description="Relative POSIX path inside the artifact directory.")]
    sha256: Sha256Hex
    size: Annotated[int, Meta(ge=0, le=MAX_FILE_BYTES, description="Size in bytes.")]
    role: Annotated[
        Literal["model", "selftest", "labels", "extra"], Meta(description="What the file is for.")
    ] = "model"

    def __post_init__(self) -> None:
        super().__post_init__()
        _safe_relative_path(self.path)


class SourceInfo(Strict, frozen=True, kw_only=True):
    """Where the model came from and what made the artifact."""

    framework: Annotated[Framework, Meta(description="The source model's framework.")]
    framework_version: (
        Annotated[str, Meta(max_length=64, description="Version of the source framework.")] | None
    ) = None
    tools: Annotated[
        dict[str, str], Meta(description="Tool name → version, e.g. {'onnxruntime': '1.20.0'}.")
    ] = field(default_factory=dict)
    original_file: (
        Annotated[str, Meta(max_length=255, description="The source file's name.")] | None
    ) = None


class Metrics(Strict, frozen=True, kw_only=True):
    """Measured quality and speed of this artifact at conversion time."""

    top1: Annotated[float, Meta(ge=0, le=1, description="Top-1 accuracy on eval.")] | None = None
    eval_samples: Annotated[int, Meta(ge=0, description="Rows behind top1.")] | None = None
    latency_ms_p50: Annotated[float, Meta(ge=0, description="Median latency.")] | None = None
    latency_ms_p95: Annotated[float, Meta(ge=0, description="95th percentile.")] | None = None
    threads: Annotated[int, Meta(ge=1, description="Threads used for latency.")] | None = None
    extra: Annotated[dict[str, float], Meta(description="Other named numbers.")] = field(
        default_factory=dict
    )


class SelfTest(Strict, frozen=True, kw_only=True):
    """Known input → expected output, run by the device before it serves the model.

    ``file`` is an ``.npz`` (loaded with ``allow_pickle=False``) holding ``input/<name>`` and
    ``output/<name>`` arrays; outputs are compared with ``numpy.allclose(atol, rtol)``.
    """

    file: Annotated[str, Meta(description="The .npz file, listed in files as 'selftest'.")]
    atol: Annotated[float, Meta(ge=0, description="Absolute tolerance.")] = 1e-4
    rtol: Annotated[float, Meta(ge=0, description="Relative tolerance.")] = 1e-3
    outputs: Annotated[list[str], Meta(min_length=1, description="Output names that are compared.")]


class ReferenceStats(Strict, frozen=True, kw_only=True):
    """What the input and output looked like on the calibration/eval set (for drift)."""

    samples: Annotated[int, Meta(ge=1, description="Rows the statistics come from.")]
    channel_mean: Annotated[list[float], Meta(description="Input mean per channel.")] = field(
        default_factory=list
    )
    channel_std: Annotated[list[float], Meta(description="Input std per channel.")] = field(
        default_factory=list
    )
    histogram_edges: Annotated[list[float], Meta(description="Shared bin edges.")] = field(
        default_factory=list
    )
    channel_histograms: Annotated[
        list[list[int]], Meta(description="Counts per channel over histogram_edges.")
    ] = field(default_factory=list)
    output_distribution: Annotated[
        list[float], Meta(description="Class frequencies for classifiers.")
    ] = field(default_factory=list)


class BuildInfo(Strict, frozen=True, kw_only=True):
    """How the converter produced this artifact."""

    calibration_sha256: (
        Annotated[Sha256Hex, Meta(description="SHA-256 of the calibration data.")] | None
    ) = None
    config: Annotated[
        dict[str, str | int | float | bool], Meta(description="The converter's settings.")
    ] = field(default_factory=dict)
    report_file: Annotated[str, Meta(description="The conversion report's file.")] | None = None


class Signature(Strict, frozen=True, kw_only=True):
    """Ed25519 signature over :func:`signing_bytes` of the manifest."""

    algorithm: Annotated[Literal["ed25519"], Meta(description="Signature algorithm.")] = "ed25519"
    key_id: Annotated[
        str, Meta(min_length=1, max_length=64, description="Which trusted key signed.")
    ]
    value: Annotated[str, Meta(min_length=1, max_length=200, description="Base64 signature.")]


class Manifest(Strict, frozen=True, kw_only=True):
    """``manifest.json``: everything a device and the server need to know about an artifact."""

    schema_version: Annotated[
        Literal[1], Meta(description="Manifest schema version (unchanged by contract 2).")
    ] = MANIFEST_SCHEMA_VERSION
    name: ModelName
    version: ModelVersion
    format: Annotated[Format, Meta(description="Model file format.")]
    precision: Annotated[Precision, Meta(description="Numeric precision of the weights.")]
    model_file: Annotated[str, Meta(description="The path (in files) the runtime loads.")]
    files: Annotated[
        list[ModelFile], Meta(min_length=1, max_length=64, description="Every file, hashed.")
    ]
    inputs: Annotated[
        list[TensorSpec], Meta(min_length=1, max_length=16, description="Model inputs.")
    ]
    outputs: Annotated[
        list[TensorSpec], Meta(min_length=1, max_length=16, description="Model outputs.")
    ]
    preprocessing: (
        Annotated[Preprocessing, Meta(description="Image → tensor recipe; None: raw tensors.")]
        | None
    ) = None
    task: Annotated[Task, Meta(description="What the outputs mean.")] = "raw"
    labels: Annotated[list[str], Meta(max_length=100_000, description="Class names, by index.")] = (
        field(default_factory=list)
    )
    postprocess: (
        Annotated[Postprocess, Meta(description="How outputs become boxes/masks (by layout).")]
        | None
    ) = None
    source: Annotated[SourceInfo, Meta(description="Where the model came from.")]
    metrics: Annotated[Metrics, Meta(description="Measured at conversion time.")] = field(
        default_factory=Metrics
    )
    self_test: Annotated[SelfTest, Meta(description="Run by the device before serving.")] | None = (
        None
    )
    reference_stats: (
        Annotated[ReferenceStats, Meta(description="Input/output statistics for drift.")] | None
    ) = None
    build: Annotated[BuildInfo, Meta(description="How the converter built it.")] = field(
        default_factory=BuildInfo
    )
    created_at: Annotated[datetime, Meta(description="When the artifact was made.")] = field(
        default_factory=lambda: datetime.now(UTC)
    )
    signature: (
        Annotated[Signature, Meta(description="Ed25519 signature; None: unsigned.")] | None
    ) = None

    def __post_init__(self) -> None:
        super().__post_init__()
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("files lists a path twice")
        by_path = {f.path: f for f in self.files}
        model = by_path.get(self.model_file)
        if model is None or model.role != "model":
            raise ValueError(f"model_file {self.model_file!r} must be listed in files as a model")
        if self.self_test is not None:
            test = by_path.get(self.self_test.file)
            if test is None or test.role != "selftest":
                raise ValueError("self_test.file must be listed in files with role 'selftest'")
            names = {t.name for t in self.outputs}
            missing = [o for o in self.self_test.outputs if o not in names]
            if missing:
                raise ValueError(f"self_test.outputs names unknown outputs {missing}")
        if self.postprocess is not None:
            layout = layout_of(self.postprocess)
            if TASK_OF_LAYOUT[layout] != self.task:
                raise ValueError(f"postprocess {layout!r} is for {TASK_OF_LAYOUT[layout]}")
            unknown = [
                o for o in output_names(self.postprocess) if o not in {t.name for t in self.outputs}
            ]
            if unknown:
                raise ValueError(f"postprocess names unknown outputs {unknown}")
        expected_suffix = {"onnx": ".onnx", "tflite": ".tflite"}[self.format]
        if not self.model_file.endswith(expected_suffix):
            raise ValueError(f"a {self.format} model_file must end with {expected_suffix}")

    @property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version)

    def file(self, path: str) -> ModelFile:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    def model_dump(
        self,
        *,
        mode: Literal["json", "python"] = "python",
        exclude: set[str] | frozenset[str] = frozenset(),
        exclude_none: bool = False,
    ) -> dict[str, Any]:
        """As :meth:`Strict.model_dump`, without ``postprocess`` when it is None: a manifest
        without it keeps the bytes (and signature) it had before the field existed, and an
        agent that predates the field still loads it."""
        data = super().model_dump(mode=mode, exclude=exclude, exclude_none=exclude_none)
        if data.get("postprocess", 0) is None:
            del data["postprocess"]
        return data

    def model_dump_json(self, *, indent: int | None = None) -> str:
        if self.postprocess is not None:
            return super().model_dump_json(indent=indent)
        raw = msgspec.json.encode(self.model_dump(mode="json"))
        if indent is not None:
            raw = msgspec.json.format(raw, indent=indent)
        return raw.decode()

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def parse_manifest(raw: bytes | str) -> Manifest:
    """Parse ``manifest.json`` bytes, migrating older schema versions; ContractError if bad."""
    data = load_json_object(raw, what="manifest", max_bytes=MAX_MANIFEST_BYTES)
    return validate(Manifest, migrate(data, what="manifest"), what="manifest")


def signing_bytes(manifest: Manifest) -> bytes:
    """The exact bytes an Ed25519 signature covers: canonical JSON without the signature."""
    return canonical_json(manifest.model_dump(mode="json", exclude={"signature"}))
