"""Corpus detectors and segmenters served without an agent config (issue #12).

Each model is converted with its package's preprocessing and only its data (the layout is
recognised from its output shapes: gfl, yolox, ssd-anchors, mask), then ``edgefleet agent
infer ARTIFACT image.jpg`` prints boxes (or mask areas), and those boxes match the ones decoded
from the fp32 source model on the same tensor (box F1 at IoU 0.5 >= 0.9; masks: IoU >= 0.9).
Skips (or fails under ``EDGEFLEET_REQUIRE_SERVICES=1``) without the corpus cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.corpus import CORPUS, cache_dir, model_path
from converters.corpus.data import IMAGENET_MEAN, IMAGENET_STD, WORDS, page, scene, write_data
from converters.corpus.fetch import is_cached
from converters.options import ConvertOptions
from converters.report import ConvertResult
from edgefleet.contract.manifest import Preprocessing, ResizeSpec
from tests.converters.test_corpus import HEAVY, HEAVY_OPTIONS
from tests.utils.required import missing

pytestmark = [pytest.mark.corpus, pytest.mark.slow]

MEAN, STD = [float(v) for v in IMAGENET_MEAN], [float(v) for v in IMAGENET_STD]


def _pre(w: int, h: int, **kw: Any) -> Preprocessing:
    resize = ResizeSpec(
        width=w, height=h, mode=kw.pop("mode", "stretch"), pad_value=kw.pop("pad_value", 114)
    )
    return Preprocessing(resize=resize, **kw)


#: name → (the package's preprocessing, the layout recognised from the output shapes).
TASKS: dict[str, tuple[Preprocessing, str]] = {
    "picodet-layout": (_pre(608, 800, color="bgr", mean=MEAN, std=STD), "gfl"),
    "yolox-ddddocr": (
        _pre(416, 416, color="bgr", scale=1.0, mode="letterbox", pad_value=114),
        "yolox",
    ),
    "blazeface": (
        _pre(128, 128, scale=1 / 127.5, mean=[1.0], std=[1.0], layout="nhwc"),
        "ssd-anchors",
    ),  # fmt: skip
    "selfie-segmentation": (_pre(256, 256, layout="nhwc"), "mask"),
    "ppocr-det": (_pre(320, 320, color="bgr", mean=MEAN, std=STD), "mask"),
}


#: What is quantized here: test_corpus.py already runs ``--quantize auto`` on every corpus model;
#: this module proves decoding and serving, and keeps one int8 detector (yolox: an int8 candidate
#: is chosen, judged by box F1). picodet took 588 s at load 20 under auto, and chose fp32.
QUANTIZE = {"yolox-ddddocr": "auto"}


def _image(name: str, rng: np.random.Generator) -> np.ndarray:
    import cv2

    if name == "picodet-layout":
        return page(rng, 800, 608)
    if name == "ppocr-det":
        return page(rng, 320, 320)
    if name == "yolox-ddddocr":
        img = scene(rng, 416, 416)
        for _ in range(4):
            at = (int(rng.integers(0, 330)), int(rng.integers(40, 400)))
            cv2.putText(img, str(rng.choice(WORDS))[:4], at, cv2.FONT_HERSHEY_SIMPLEX,
                        1.5, (0, 0, 0), 2)  # fmt: skip
        return img
    if name == "blazeface":
        return scene(rng, 256, 256, faces=True)
    return scene(rng, 256, 256)


@dataclass(frozen=True)
class Done:
    result: ConvertResult
    seconds: float


@pytest.fixture(scope="module")
def done() -> dict[str, Done]:
    return {}


def _convert(name: str, cache: dict[str, Done], work: Path) -> Done:
    import time

    from converters.api import convert

    model = next(m for m in CORPUS if m.name == name)
    if not is_cached(model):
        missing(f"corpus model {name} is not in {cache_dir()}: run `python -m converters.corpus "
                "fetch` (or set EDGEFLEET_CORPUS_DIR)")  # fmt: skip
    if name not in cache:
        calib, evals = write_data(model, work, rows=4 if name in HEAVY else 16)
        options = ConvertOptions(
            calibration=calib,
            eval_data=evals,
            quantize=QUANTIZE.get(name, "none"),
            preprocessing=TASKS[name][0],
            progress=False,
            **(HEAVY_OPTIONS if name in HEAVY else {}),
        )
        started = time.perf_counter()
        result = convert(model_path(model), work / "artifact", options)
        cache[name] = Done(result, time.perf_counter() - started)
    return cache[name]


def _fp32(name: str, tensor: np.ndarray) -> dict[str, np.ndarray]:
    """The source model's outputs on ``tensor`` (ONNX Runtime or LiteRT, one row at a time)."""
    model = next(m for m in CORPUS if m.name == name)
    path = model_path(model)
    if model.format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        feed = {session.get_inputs()[0].name: tensor.astype(np.float32)}
        return dict(zip(names, session.run(None, feed), strict=True))
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor.astype(np.float32))
    interpreter.invoke()
    return {o["name"]: interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()}


@pytest.mark.timeout(1200)  # picodet-layout: ~2 min idle, 9.8 min at load average 20
@pytest.mark.parametrize("name", list(TASKS))
def test_agent_infer_serves_the_recorded_layout_and_matches_fp32(
    name: str, done: dict[str, Done], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2

    from agent.engine import BackendOptions, load_model
    from agent.inputs import InputItem
    from agent.pipeline import prepare
    from agent.state import Serving
    from converters.quantize.task_metrics import matched
    from edgefleet.cli import main
    from edgefleet.contract.postprocess import MaskPost, layout_of
    from edgefleet.decode import Boxes, class_map, detect

    result = _convert(name, done, tmp_path).result
    manifest = result.manifest
    assert manifest.postprocess is not None
    assert layout_of(manifest.postprocess) == TASKS[name][1]
    image = tmp_path / "image.jpg"
    cv2.imwrite(str(image), _image(name, np.random.default_rng(7))[..., ::-1])
    capsys.readouterr()
    assert main(["agent", "infer", str(result.artifact_dir), str(image)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    model = load_model(result.artifact_dir, options=BackendOptions(threads=1))
    serving = Serving.of(model, None)
    job = prepare(InputItem(image.name, image.read_bytes()), serving)
    fp32 = _fp32(name, job.tensor)
    q = result.report.quantization
    chosen = q.chosen if q is not None else "fp32 (wrapped)"
    if q is not None:  # the budget measure of the chosen artifact on the eval rows
        value = next(c.metric for c in q.candidates if c.name == q.chosen)
        chosen += f" ({q.metric} {value:.4f} on {q.eval_rows} eval rows)"
    if isinstance(manifest.postprocess, MaskPost):
        want = serving.results(fp32, [job.geometry])[0]
        assert set(printed) >= {"mask_shape", "classes"}
        served = class_map(manifest.postprocess, model.infer({serving.preprocess.tensor.name:
                                                              job.tensor}), 0)  # fmt: skip
        ref = class_map(manifest.postprocess, fp32, 0)
        union = ((served == 1) | (ref == 1)).sum()
        iou = float(((served == 1) & (ref == 1)).sum() / union) if union else 1.0
        print(f"{name}: {chosen}, mask IoU vs fp32 {iou:.4f}, classes {want['classes']}")  # noqa: T201
        assert iou >= 0.9
        return
    boxes = printed["detections"]
    assert boxes, printed
    got = Boxes(
        np.array([d["box"] for d in boxes], np.float32).reshape(-1, 4),
        np.array([d["score"] for d in boxes], np.float32),
        np.array([d["class"] for d in boxes], np.int64),
    )
    size = (manifest.preprocessing.resize.width, manifest.preprocessing.resize.height)  # type: ignore[union-attr]
    ref = detect(manifest.postprocess, fp32, 0, size)  # type: ignore[arg-type]
    ref = Boxes(job.geometry.to_source(ref.xyxy), ref.scores, ref.classes)
    f1 = 2 * matched(got, ref) / (len(got) + len(ref))
    print(f"{name}: {chosen}, {len(got)} boxes, F1 vs fp32 {f1:.3f}")  # noqa: T201
    assert f1 >= 0.9, (boxes, ref.xyxy.tolist())
