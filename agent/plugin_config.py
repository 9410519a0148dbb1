"""Typed configs of the agent's plugins: input sources, result sinks and postprocessors.

Each union is discriminated by ``type``; one member per plugin, registered by hand in
``agent.inputs.SOURCES``, ``agent.sinks.SINKS`` and ``agent.postprocess.POSTPROCESSORS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- input sources ---------------------------------------------------------------------------
class FolderInputConfig(_Config):
    """Images (.png, .jpg, ...) and ready tensors (.npy) read from a folder, in name order."""

    type: Literal["folder"] = Field(description="Input source kind.")
    path: Path = Field(description="The folder to read.")
    pattern: str = Field(
        default="*", min_length=1, max_length=255, description="Glob on file names, e.g. '*.png'."
    )
    loop: bool = Field(default=False, description="Cycle through the folder forever.")
    rate_hz: float = Field(default=10.0, gt=0, le=10_000, description="Items per second, at most.")
    poll_s: float = Field(
        default=0.5, gt=0, le=60, description="How often an exhausted folder is listed again."
    )
    max_file_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1, le=1024**3, description="Larger files are skipped."
    )


class VideoInputConfig(_Config):
    """Frames of a video file, every one of them (back-pressure: none is dropped)."""

    type: Literal["video"] = Field(description="Input source kind.")
    path: Path = Field(description="The video file (anything OpenCV's FFmpeg backend reads).")
    loop: bool = Field(default=False, description="Start again at the end instead of stopping.")
    realtime: bool = Field(
        default=False, description="Pace frames at the file's frame rate instead of max speed."
    )


class CameraInputConfig(_Config):
    """A local camera by index (V4L2); the newest frame wins (drop-oldest)."""

    type: Literal["camera"] = Field(description="Input source kind.")
    index: int = Field(default=0, ge=0, le=63, description="Camera index (/dev/videoN).")
    width: int | None = Field(default=None, ge=16, le=7680, description="Capture width; profile.")
    height: int | None = Field(default=None, ge=16, le=4320, description="Capture height; profile.")
    fps: float | None = Field(default=None, gt=0, le=240, description="Capture rate; profile.")
    reconnect_s: float = Field(
        default=2.0, gt=0, le=600, description="Wait before reopening a camera that went away."
    )


class StreamInputConfig(_Config):
    """An RTSP or HTTP video stream (OpenCV/FFmpeg); the newest frame wins (drop-oldest)."""

    type: Literal["stream"] = Field(description="Input source kind.")
    url: str = Field(
        pattern=r"^(rtsp|rtsps|http|https)://\S+$", description="rtsp://... or http(s)://..."
    )
    reconnect_s: float = Field(
        default=2.0, gt=0, le=600, description="Wait before reopening a stream that ended."
    )


class HttpInputConfig(_Config):
    """An HTTP endpoint on the device: POST /infer, GET /healthz, GET /metrics."""

    type: Literal["http"] = Field(description="Input source kind.")
    host: str = Field(default="127.0.0.1", description="Address to bind; 0.0.0.0 for all.")
    port: int = Field(default=8081, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1, le=1024**3, description="Larger bodies get 413."
    )
    timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="How long a request waits for its result."
    )


class BatchInputConfig(_Config):
    """Every image/.npy file of a folder, or every row of one .npy file, once (back-pressure)."""

    type: Literal["batch"] = Field(description="Input source kind.")
    path: Path = Field(description="A folder of images/.npy files, or one .npy of samples.")
    pattern: str = Field(default="*", min_length=1, max_length=255, description="Glob on names.")
    max_file_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, le=4 * 1024**3, description="Larger files are skipped."
    )


InputConfig = Annotated[
    FolderInputConfig
    | VideoInputConfig
    | CameraInputConfig
    | StreamInputConfig
    | HttpInputConfig
    | BatchInputConfig,
    Field(discriminator="type"),
]


# -- result sinks ----------------------------------------------------------------------------
class FileSinkConfig(_Config):
    """One JSON line per result, appended to a local file."""

    type: Literal["file"] = Field(description="Result sink kind.")
    path: Path = Field(description="The JSONL file (created if missing).")


class StdoutSinkConfig(_Config):
    """One JSON line per result on standard output."""

    type: Literal["stdout"] = Field(description="Result sink kind.")


class MqttSinkConfig(_Config):
    """One ``Result`` message per result on ``edgefleet/v1/<device>/results``, on the agent's
    MQTT connection. Not stored and forwarded: while the broker is away results wait in a
    bounded in-memory queue, and the oldest is dropped (and counted) when it is full."""

    type: Literal["mqtt"] = Field(description="Result sink kind.")
    qos: Literal[0, 1] = Field(
        default=0, description="0: at most once (cheapest); 1: acknowledged by the broker."
    )
    max_queued: int = Field(
        default=1000, ge=1, le=1_000_000, description="Results held while the broker is away."
    )


SinkConfig = Annotated[
    FileSinkConfig | StdoutSinkConfig | MqttSinkConfig, Field(discriminator="type")
]


# -- postprocessors --------------------------------------------------------------------------
class ClassificationPostConfig(_Config):
    """Top-k classes with labels and scores (probabilities; logits are softmaxed)."""

    type: Literal["classification"] = Field(description="Postprocessor kind.")
    top_k: int = Field(default=5, ge=1, le=1000, description="Classes reported per input.")


class DetectionPostConfig(_Config):
    """Boxes decoded from SSD- or YOLO-style outputs, NMS (cv2.dnn), in source-image pixels."""

    type: Literal["detection"] = Field(description="Postprocessor kind.")
    style: Literal["auto", "ssd", "yolov5", "yolov8"] = Field(
        default="auto",
        description="ssd: boxes [1,N,4] + scores [1,N,C]; yolov5: [1,N,5+C] with objectness; "
        "yolov8: [1,4+C,N]; auto: from the output shapes and the number of labels.",
    )
    ssd_box_order: Literal["yxyx", "xyxy"] = Field(
        default="yxyx", description="Corner order of SSD boxes (normalised 0-1)."
    )
    score_threshold: float = Field(default=0.25, ge=0, le=1, description="Minimum score.")
    iou_threshold: float = Field(default=0.45, gt=0, le=1, description="NMS overlap limit.")
    max_detections: int = Field(default=100, ge=1, le=10_000, description="Kept per input.")


class SegmentationPostConfig(_Config):
    """A class per pixel, back in source-image geometry; class areas, optionally the mask."""

    type: Literal["segmentation"] = Field(description="Postprocessor kind.")
    include_mask: bool = Field(
        default=False, description="Add the class map as a base64 PNG ('mask_png')."
    )


class RawPostConfig(_Config):
    """Every output tensor as nested lists (dequantized)."""

    type: Literal["raw"] = Field(description="Postprocessor kind.")
    max_values: int = Field(
        default=4096, ge=1, le=10_000_000, description="Larger outputs are reported by shape only."
    )


PostprocessConfig = Annotated[
    ClassificationPostConfig | DetectionPostConfig | SegmentationPostConfig | RawPostConfig,
    Field(discriminator="type"),
]
