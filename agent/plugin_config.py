"""Typed configs of the agent's plugins: input sources, result sinks and postprocessors.

Each union is a msgspec tagged union on ``type`` (the Struct's tag, also readable as
``config.type``); one member per plugin, registered by hand in ``agent.inputs.SOURCES``,
``agent.sinks.SINKS`` and ``agent.postprocess.POSTPROCESSORS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from agent.config_types import ConfigStruct


class PluginConfig(ConfigStruct, frozen=True, kw_only=True):
    """Base of the plugin configs: the ``type`` key is the Struct's tag."""

    @property
    def type(self) -> str:
        """The plugin's key in its registry (the TOML ``type``)."""
        return str(self.__struct_config__.tag)


# -- input sources ---------------------------------------------------------------------------
class FolderInputConfig(PluginConfig, tag_field="type", tag="folder", frozen=True, kw_only=True):
    """Images (.png, .jpg, ...) and ready tensors (.npy) read from a folder, in name order."""

    path: Annotated[Path, Meta(description="The folder to read.")]
    pattern: Annotated[
        str, Meta(min_length=1, max_length=255, description="Glob on file names, e.g. '*.png'.")
    ] = "*"
    loop: Annotated[bool, Meta(description="Cycle through the folder forever.")] = False
    rate_hz: Annotated[float, Meta(gt=0, le=10_000, description="Items per second, at most.")] = (
        10.0
    )
    poll_s: Annotated[
        float, Meta(gt=0, le=60, description="How often an exhausted folder is listed again.")
    ] = 0.5
    max_file_bytes: Annotated[
        int, Meta(ge=1, le=1024**3, description="Larger files are skipped.")
    ] = 32 * 1024 * 1024


class VideoInputConfig(PluginConfig, tag_field="type", tag="video", frozen=True, kw_only=True):
    """Frames of a video file, every one of them (back-pressure: none is dropped)."""

    path: Annotated[
        Path, Meta(description="The video file (anything OpenCV's FFmpeg backend reads).")
    ]
    loop: Annotated[bool, Meta(description="Start again at the end instead of stopping.")] = False
    realtime: Annotated[
        bool, Meta(description="Pace frames at the file's frame rate instead of max speed.")
    ] = False


class CameraInputConfig(PluginConfig, tag_field="type", tag="camera", frozen=True, kw_only=True):
    """A local camera by index (V4L2); the newest frame wins (drop-oldest)."""

    index: Annotated[int, Meta(ge=0, le=63, description="Camera index (/dev/videoN).")] = 0
    width: Annotated[int, Meta(ge=16, le=7680, description="Capture width; profile.")] | None = None
    height: Annotated[int, Meta(ge=16, le=4320, description="Capture height; profile.")] | None = (
        None
    )
    fps: Annotated[float, Meta(gt=0, le=240, description="Capture rate; profile.")] | None = None
    reconnect_s: Annotated[
        float, Meta(gt=0, le=600, description="Wait before reopening a camera that went away.")
    ] = 2.0


class StreamInputConfig(PluginConfig, tag_field="type", tag="stream", frozen=True, kw_only=True):
    """An RTSP or HTTP video stream (OpenCV/FFmpeg); the newest frame wins (drop-oldest)."""

    url: Annotated[
        str,
        Meta(
            pattern=r"^(rtsp|rtsps|http|https)://\S+\Z", description="rtsp://... or http(s)://..."
        ),
    ]
    reconnect_s: Annotated[
        float, Meta(gt=0, le=600, description="Wait before reopening a stream that ended.")
    ] = 2.0


class HttpInputConfig(PluginConfig, tag_field="type", tag="http", frozen=True, kw_only=True):
    """An HTTP endpoint on the device: POST /infer, GET /healthz, GET /metrics."""

    host: Annotated[str, Meta(description="Address to bind; 0.0.0.0 for all.")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535, description="TCP port; 0 picks a free one.")] = 8081
    max_body_bytes: Annotated[int, Meta(ge=1, le=1024**3, description="Larger bodies get 413.")] = (
        16 * 1024 * 1024
    )
    timeout_s: Annotated[
        float, Meta(gt=0, le=600, description="How long a request waits for its result.")
    ] = 10.0


class BatchInputConfig(PluginConfig, tag_field="type", tag="batch", frozen=True, kw_only=True):
    """Every image/.npy file of a folder, or every row of one .npy file, once (back-pressure)."""

    path: Annotated[
        Path, Meta(description="A folder of images/.npy files, or one .npy of samples.")
    ]
    pattern: Annotated[str, Meta(min_length=1, max_length=255, description="Glob on names.")] = "*"
    max_file_bytes: Annotated[
        int, Meta(ge=1, le=4 * 1024**3, description="Larger files are skipped.")
    ] = 256 * 1024 * 1024


InputConfig = (
    FolderInputConfig
    | VideoInputConfig
    | CameraInputConfig
    | StreamInputConfig
    | HttpInputConfig
    | BatchInputConfig
)


# -- result sinks ----------------------------------------------------------------------------
class FileSinkConfig(PluginConfig, tag_field="type", tag="file", frozen=True, kw_only=True):
    """One JSON line per result, appended to a local file."""

    path: Annotated[Path, Meta(description="The JSONL file (created if missing).")]


class StdoutSinkConfig(PluginConfig, tag_field="type", tag="stdout", frozen=True, kw_only=True):
    """One JSON line per result on standard output."""


class MqttSinkConfig(PluginConfig, tag_field="type", tag="mqtt", frozen=True, kw_only=True):
    """One ``Result`` message per result on ``edgefleet/v1/<device>/results``, on the agent's
    MQTT connection. Not stored and forwarded: while the broker is away results wait in a
    bounded in-memory queue, and the oldest is dropped (and counted) when it is full."""

    qos: Annotated[
        Literal[0, 1],
        Meta(description="0: at most once (cheapest); 1: acknowledged by the broker."),
    ] = 0
    max_queued: Annotated[
        int, Meta(ge=1, le=1_000_000, description="Results held while the broker is away.")
    ] = 1000


SinkConfig = FileSinkConfig | StdoutSinkConfig | MqttSinkConfig


# -- postprocessors --------------------------------------------------------------------------
class ClassificationPostConfig(
    PluginConfig, tag_field="type", tag="classification", frozen=True, kw_only=True
):
    """Top-k classes with labels and scores (probabilities; logits are softmaxed)."""

    top_k: Annotated[int, Meta(ge=1, le=1000, description="Classes reported per input.")] = 5


class DetectionPostConfig(
    PluginConfig, tag_field="type", tag="detection", frozen=True, kw_only=True
):
    """Boxes decoded from SSD- or YOLO-style outputs, NMS (cv2.dnn), in source-image pixels."""

    style: Annotated[
        Literal["auto", "ssd", "yolov5", "yolov8"],
        Meta(
            description="ssd: boxes [1,N,4] + scores [1,N,C]; yolov5: [1,N,5+C] with objectness; "
            "yolov8: [1,4+C,N]; auto: from the output shapes and the number of labels."
        ),
    ] = "auto"
    ssd_box_order: Annotated[
        Literal["yxyx", "xyxy"], Meta(description="Corner order of SSD boxes (normalised 0-1).")
    ] = "yxyx"
    score_threshold: Annotated[float, Meta(ge=0, le=1, description="Minimum score.")] = 0.25
    iou_threshold: Annotated[float, Meta(gt=0, le=1, description="NMS overlap limit.")] = 0.45
    max_detections: Annotated[int, Meta(ge=1, le=10_000, description="Kept per input.")] = 100


class SegmentationPostConfig(
    PluginConfig, tag_field="type", tag="segmentation", frozen=True, kw_only=True
):
    """A class per pixel, back in source-image geometry; class areas, optionally the mask."""

    include_mask: Annotated[
        bool, Meta(description="Add the class map as a base64 PNG ('mask_png').")
    ] = False


class RawPostConfig(PluginConfig, tag_field="type", tag="raw", frozen=True, kw_only=True):
    """Every output tensor as nested lists (dequantized)."""

    max_values: Annotated[
        int, Meta(ge=1, le=10_000_000, description="Larger outputs are reported by shape only.")
    ] = 4096


PostprocessConfig = (
    ClassificationPostConfig | DetectionPostConfig | SegmentationPostConfig | RawPostConfig
)
