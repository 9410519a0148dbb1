"""The artifact manifest: ``manifest.json`` beside the model files of every artifact.

One manifest describes one model version in one format and precision: its files (with
SHA-256 and size), its tensors, how to preprocess an image for it, what its outputs mean, how
it was made and measured, a self-test the device runs before serving it, reference statistics
for drift detection, and an Ed25519 signature over all of the above.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgefleet.contract.common import (
    SCHEMA_VERSION,
    ModelName,
    ModelRef,
    ModelVersion,
    Sha256Hex,
    Strict,
)
from edgefleet.contract.parsing import canonical_json, load_json_object, migrate, validate

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


class QuantParams(Strict):
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``."""

    scale: list[float] = Field(min_length=1, description="One scale, or one per channel.")
    zero_point: list[int] = Field(min_length=1, description="Same length as scale.")
    axis: int | None = Field(default=None, description="Channel axis for per-channel params.")

    @model_validator(mode="after")
    def _lengths(self) -> QuantParams:
        if len(self.scale) != len(self.zero_point):
            raise ValueError("scale and zero_point must have the same length")
        if len(self.scale) > 1 and self.axis is None:
            raise ValueError("per-channel params need an axis")
        if any(s <= 0 for s in self.scale):
            raise ValueError("scales must be positive")
        return self


class TensorSpec(Strict):
    """A model input or output."""

    name: str = Field(min_length=1, max_length=256, description="Tensor name in the graph.")
    shape: list[int | str] = Field(
        max_length=8,
        description="Dimensions; a string is a dynamic dimension's symbolic name (e.g. 'batch').",
    )
    dtype: Dtype = Field(description="Element type.")
    quantization: QuantParams | None = Field(
        default=None, description="Present when the tensor is quantized."
    )

    @field_validator("shape")
    @classmethod
    def _dims(cls, shape: list[int | str]) -> list[int | str]:
        for dim in shape:
            if isinstance(dim, int) and dim < 1:
                raise ValueError("static dimensions must be >= 1; name dynamic ones")
            if isinstance(dim, str) and not (0 < len(dim) <= 64):
                raise ValueError("dynamic dimension names must be 1-64 characters")
        return shape


class ResizeSpec(Strict):
    """How an image is brought to the model's input size."""

    width: int = Field(ge=1, le=8192)
    height: int = Field(ge=1, le=8192)
    mode: Literal["stretch", "letterbox"] = Field(
        default="stretch", description="'letterbox' keeps the aspect ratio and pads."
    )
    interpolation: Literal["linear", "nearest", "area", "cubic"] = "area"
    pad_value: int = Field(default=114, ge=0, le=255, description="Letterbox padding value.")


class Preprocessing(Strict):
    """Image → tensor: ``x = (pixel * scale - mean) / std`` per channel, then layout and dtype.

    Images are decoded as 8-bit; ``color`` is the channel order the model expects.
    """

    color: Literal["rgb", "bgr", "gray"] = "rgb"
    resize: ResizeSpec | None = None
    scale: float = Field(default=1 / 255, gt=0, description="Applied to raw 0-255 pixels first.")
    mean: list[float] = Field(default_factory=list, description="Per channel; empty for none.")
    std: list[float] = Field(default_factory=list, description="Per channel; empty for none.")
    invert: bool = Field(default=False, description="Use 255 - pixel (dark-on-light → light).")
    layout: Literal["nchw", "nhwc", "flat"] = Field(
        default="nchw", description="'flat' flattens each image to one row (classic ML models)."
    )
    dtype: Dtype = "float32"

    @model_validator(mode="after")
    def _channels(self) -> Preprocessing:
        channels = 1 if self.color == "gray" else 3
        for label, values in (("mean", self.mean), ("std", self.std)):
            if values and len(values) not in (1, channels):
                raise ValueError(f"{label} needs 1 or {channels} values for color={self.color}")
        if any(s == 0 for s in self.std):
            raise ValueError("std values must be non-zero")
        return self


class ModelFile(Strict):
    """One file of the artifact, relative to the manifest."""

    path: str = Field(description="Relative POSIX path inside the artifact directory.")
    sha256: Sha256Hex
    size: int = Field(ge=0, le=MAX_FILE_BYTES, description="Size in bytes.")
    role: Literal["model", "selftest", "labels", "extra"] = "model"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _safe_relative_path(value)


class SourceInfo(Strict):
    """Where the model came from and what made the artifact."""

    framework: Framework
    framework_version: str | None = Field(default=None, max_length=64)
    tools: dict[str, str] = Field(
        default_factory=dict, description="Tool name → version, e.g. {'onnxruntime': '1.20.0'}."
    )
    original_file: str | None = Field(default=None, max_length=255)


class Metrics(Strict):
    """Measured quality and speed of this artifact at conversion time."""

    top1: float | None = Field(default=None, ge=0, le=1, description="Top-1 accuracy on eval.")
    eval_samples: int | None = Field(default=None, ge=0)
    latency_ms_p50: float | None = Field(default=None, ge=0)
    latency_ms_p95: float | None = Field(default=None, ge=0)
    threads: int | None = Field(default=None, ge=1, description="Threads used for latency.")
    extra: dict[str, float] = Field(default_factory=dict)


class SelfTest(Strict):
    """Known input → expected output, run by the device before it serves the model.

    ``file`` is an ``.npz`` (loaded with ``allow_pickle=False``) holding ``input/<name>`` and
    ``output/<name>`` arrays; outputs are compared with ``numpy.allclose(atol, rtol)``.
    """

    file: str
    atol: float = Field(default=1e-4, ge=0)
    rtol: float = Field(default=1e-3, ge=0)
    outputs: list[str] = Field(min_length=1, description="Output names that are compared.")


class ReferenceStats(Strict):
    """What the input and output looked like on the calibration/eval set (for drift)."""

    samples: int = Field(ge=1)
    channel_mean: list[float] = Field(default_factory=list)
    channel_std: list[float] = Field(default_factory=list)
    histogram_edges: list[float] = Field(default_factory=list)
    channel_histograms: list[list[int]] = Field(default_factory=list)
    output_distribution: list[float] = Field(
        default_factory=list, description="Class frequencies for classifiers."
    )


class BuildInfo(Strict):
    """How the converter produced this artifact."""

    calibration_sha256: Sha256Hex | None = None
    config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    report_file: str | None = None


class Signature(Strict):
    """Ed25519 signature over :func:`signing_bytes` of the manifest."""

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str = Field(min_length=1, max_length=64, description="Which trusted key signed.")
    value: str = Field(min_length=1, max_length=200, description="Base64 signature.")


class Manifest(Strict):
    """``manifest.json``: everything a device and the server need to know about an artifact."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: ModelName
    version: ModelVersion
    format: Format
    precision: Precision
    model_file: str = Field(description="The path (in files) the runtime loads.")
    files: list[ModelFile] = Field(min_length=1, max_length=64)
    inputs: list[TensorSpec] = Field(min_length=1, max_length=16)
    outputs: list[TensorSpec] = Field(min_length=1, max_length=16)
    preprocessing: Preprocessing | None = None
    task: Task = "raw"
    labels: list[str] = Field(default_factory=list, max_length=100_000)
    source: SourceInfo
    metrics: Metrics = Field(default_factory=Metrics)
    self_test: SelfTest | None = None
    reference_stats: ReferenceStats | None = None
    build: BuildInfo = Field(default_factory=BuildInfo)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    signature: Signature | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
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
        expected_suffix = {"onnx": ".onnx", "tflite": ".tflite"}[self.format]
        if not self.model_file.endswith(expected_suffix):
            raise ValueError(f"a {self.format} model_file must end with {expected_suffix}")
        return self

    @property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version)

    def file(self, path: str) -> ModelFile:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def parse_manifest(raw: bytes | str) -> Manifest:
    """Parse ``manifest.json`` bytes, migrating older schema versions; ContractError if bad."""
    data = load_json_object(raw, what="manifest", max_bytes=MAX_MANIFEST_BYTES)
    return validate(Manifest, migrate(data, what="manifest"), what="manifest")


def signing_bytes(manifest: Manifest) -> bytes:
    """The exact bytes an Ed25519 signature covers: canonical JSON without the signature."""
    return canonical_json(manifest.model_dump(mode="json", exclude={"signature"}))
