"""The drift demo's material, all from scikit-learn's digits: the frames the cameras see (clean or
drifted), the parent model 1.0.0 (trained on clean digits, converted, with reference statistics,
signed) and a model's accuracy on held-out frames."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgefleet.demo import DIGITS_PREPROCESSING, MODEL_NAME, OLD_VERSION, PIXEL_SCALE

#: Images each agent loops over (digits 0..IMAGES-1); held-out eval: digits 1400.. (drifted).
IMAGES = 600
EVAL_FROM = 1400


def camera_frames(folder: Path, start: int, count: int, *, drifted: bool) -> dict[str, Any]:
    """Write digits as 8-bit PNGs (clean or drifted); their pixels and true labels by name."""
    import cv2
    import numpy as np
    from sklearn.datasets import load_digits

    from edgefleet.demo_drift.drift import drift_image

    data = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    order = np.random.default_rng(start).permutation(count)
    for rank, i in zip(order, range(start, start + count), strict=True):
        img = np.clip(np.rint(data.data[i].reshape(8, 8) / PIXEL_SCALE), 0, 255).astype(np.uint8)
        if drifted:
            img = drift_image(img, seed=i)
        name = f"{rank:04d}.png"
        tmp = folder / f".{name}"
        cv2.imwrite(str(tmp), img)
        os.replace(tmp, folder / name)  # the agent never reads a half-written frame
        out[name] = (img, int(data.target[i]))
    return out


def parent_model(root: Path, signing_key: bytes) -> Path:
    """1.0.0: trained on clean digits, converted, with reference statistics of the frames the
    cameras deliver before the drift (8-bit pixels times the scale), signed."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from converters.api import ConvertOptions, convert
    from converters.stats import reference_stats
    from edgefleet.signing import sign_manifest

    data = load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    source = root / "digits-1.0.0.pkl"
    joblib.dump(LogisticRegression(max_iter=500).fit(x[:EVAL_FROM], y[:EVAL_FROM]), source)
    np.savez(root / "eval.npz", x=x[EVAL_FROM:], y=y[EVAL_FROM:])
    np.savez(root / "base.npz", x=x[:EVAL_FROM], y=y[:EVAL_FROM])
    pre = DIGITS_PREPROCESSING
    result = convert(
        source,
        root / "artifact-1.0.0",
        ConvertOptions(
            name=MODEL_NAME,
            version=OLD_VERSION,
            task="classification",
            preprocessing=pre,
            eval_data=root / "eval.npz",
        ),
    )
    pixels = np.clip(np.rint(x[:IMAGES] / PIXEL_SCALE), 0, 255).astype(np.float32) * PIXEL_SCALE
    ref = reference_stats(pixels.astype(np.float32), layout="flat", predicted=None, n_classes=None)
    manifest = result.manifest.model_copy(update={"reference_stats": ref})
    (result.artifact_dir / "manifest.json").write_text(
        sign_manifest(manifest, signing_key).to_json()
    )
    return result.artifact_dir


def accuracy(artifact: Path, pixels: Any, labels: Any) -> float:
    import numpy as np

    from converters.runtime import make_session, run_batched
    from converters.stats import class_index

    manifest = json.loads((artifact / "manifest.json").read_text())
    session = make_session((artifact / manifest["model_file"]).read_bytes())
    x = (pixels.reshape(len(pixels), 64).astype(np.float32) * np.float32(PIXEL_SCALE)).astype(
        np.float32
    )
    predicted = class_index(run_batched(session, {manifest["inputs"][0]["name"]: x}, batch=None))
    return float((np.asarray(predicted) == labels).mean())
