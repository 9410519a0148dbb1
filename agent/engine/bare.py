"""A bare ``.onnx`` or ``.tflite`` file as a :class:`LoadedModel`, for ``edgefleet agent infer``
and ``bench`` (issue #12: ``agent infer model.tflite img.jpg`` said "is not a directory").

There is no manifest, so one is made from the file: its hash, the tensors the runtime declares
and, for one image-like input (4-D, 1 or 3 channels, fixed height and width), a guessed
preprocessing — RGB scaled to 0..1, stretched to the input's size, in the input's layout —
which :func:`guessed_preprocessing` reports so the user can see what was assumed. There is no
self-test: a bare file is the user's own, not a delivered artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agent.engine.base import BackendOptions
from agent.engine.model import LoadedModel
from agent.errors import ModelLoadError
from edgefleet.artifact import hash_file
from edgefleet.contract import Manifest, Preprocessing, TensorSpec

FORMAT_BY_SUFFIX = {".onnx": "onnx", ".tflite": "tflite"}


def bare_format(path: Path) -> str | None:
    """``onnx`` / ``tflite`` for a model file with that suffix, else None."""
    return FORMAT_BY_SUFFIX.get(path.suffix.lower()) if path.is_file() else None


def load_bare(path: Path, options: BackendOptions) -> LoadedModel:
    """The model file at ``path`` behind the engine's checks; ModelLoadError if it cannot load."""
    fmt = bare_format(path)
    if fmt is None:
        raise ModelLoadError(f"{path}: not an artifact directory, .onnx or .tflite file")
    from agent.engine.registry import backend_for

    session = backend_for(fmt).load(path, options)
    inputs, outputs = declared(path, fmt)
    sha, size = hash_file(path)
    pre = guessed_preprocessing(inputs)
    manifest = Manifest.model_validate(
        {
            "name": "bare",
            "version": "0.0.0",
            "format": fmt,
            "precision": "fp32",
            "model_file": path.name,
            "files": [{"path": path.name, "sha256": sha, "size": size}],
            "inputs": [t.model_dump() for t in inputs],
            "outputs": [t.model_dump() for t in outputs],
            "preprocessing": pre.model_dump() if pre is not None else None,
            "source": {"framework": fmt},
        }
    )
    return LoadedModel(manifest=manifest, directory=path.parent, session=session)


def guessed_preprocessing(inputs: list[TensorSpec]) -> Preprocessing | None:
    """RGB 0..1 at the input's fixed size for one 4-D float image input, else None."""
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or not inputs[0].dtype.startswith("float"):
        return None
    _, a, b, c = inputs[0].shape
    if c in (1, 3) and isinstance(a, int) and isinstance(b, int):
        layout, channels, height, width = "nhwc", c, a, b
    elif a in (1, 3) and isinstance(b, int) and isinstance(c, int):
        layout, channels, height, width = "nchw", a, b, c
    else:
        return None
    return Preprocessing.model_validate(
        {
            "color": "gray" if channels == 1 else "rgb",
            "resize": {"width": width, "height": height},
            "layout": layout,
            "dtype": inputs[0].dtype,
        }
    )


def declared(path: Path, fmt: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Tensor specs read from a bare model file."""
    if fmt == "onnx":
        import onnxruntime as ort

        from agent.engine.onnx import ORT_DTYPES

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def ort_spec(i: Any) -> TensorSpec:
            shape = [d if isinstance(d, int) and d > 0 else f"d{k}" for k, d in enumerate(i.shape)]
            return TensorSpec.model_validate(
                {"name": i.name, "shape": shape, "dtype": ORT_DTYPES[i.type]}
            )

        return (
            [ort_spec(i) for i in sess.get_inputs()],
            [ort_spec(o) for o in sess.get_outputs()],
        )
    from agent.engine.litert import _interpreter_class

    interp = _interpreter_class()(model_path=str(path))

    def lite_spec(d: dict[str, Any]) -> TensorSpec:
        sig = [int(v) for v in d["shape_signature"]]
        shape: list[int | str] = [v if v > 0 else f"d{k}" for k, v in enumerate(sig)]
        return TensorSpec(name=d["name"], shape=shape, dtype=np.dtype(d["dtype"]).name)

    return (
        [lite_spec(d) for d in interp.get_input_details()],
        [lite_spec(d) for d in interp.get_output_details()],
    )
