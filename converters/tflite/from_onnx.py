"""ONNX → TFLite through onnx2tf, run from its own tool venv.

onnx2tf 2.x needs Python >= 3.12 and pins exact numpy/onnxruntime/TensorFlow versions that
clash with ours, so it lives in a separate venv (``python -m converters.tflite.from_onnx
install`` makes one, cached under ``~/.cache/edgefleet/tools/onnx2tf``) and runs as a
subprocess; ``EDGEFLEET_ONNX2TF`` points at another ``onnx2tf`` executable. Image inputs keep
the ONNX model's NCHW layout (``-kat``), so the manifest's preprocessing stays the one the
user wrote; dynamic dimensions are fixed (batch 1). The ONNX model itself, run with
onnxruntime, is the reference the TFLite artifact is validated against.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from converters.errors import ConvertError, InputError, one_line
from converters.tflite.prebuilt import Prebuilt

ENV = "EDGEFLEET_ONNX2TF"
#: What the tool venv installs (onnx2tf 2.x pins the rest itself).
REQUIREMENTS = (
    "onnx2tf>=2.6,<3",
    "tensorflow-cpu==2.21.*",
    "tf-keras==2.21.*",
    "onnx",
    "onnxruntime",
    "onnx-graphsurgeon",
    "onnxsim",
    "sng4onnx",
    "psutil",
    "ml_dtypes",
)
TIMEOUT_S = 900


def tool_dir() -> Path:
    return Path.home() / ".cache" / "edgefleet" / "tools" / "onnx2tf"


def find_tool() -> Path | None:
    """The onnx2tf executable: $EDGEFLEET_ONNX2TF, else the cached tool venv's."""
    given = os.environ.get(ENV)
    if given:
        return Path(given)
    default = tool_dir() / "bin" / "onnx2tf"
    return default if default.is_file() else None


def _missing() -> InputError:
    return InputError(
        "ONNX → TFLite needs onnx2tf (Python >= 3.12, its own venv): run "
        "'python -m converters.tflite.from_onnx install' or set EDGEFLEET_ONNX2TF"
    )


def onnx_to_tflite(source: Path, *, input_shapes: Mapping[str, list[int]]) -> Prebuilt:
    """ONNX → float32 TFLite. Image inputs keep NCHW (``-kat``) when onnx2tf can; when it
    cannot (its NCHW path fails on some graphs, e.g. a softmax axis in PP-OCR's classifier),
    onnx2tf's own NHWC conversion is taken and the caller is told which inputs changed."""
    import onnx

    tool = find_tool()
    if tool is None or not tool.is_file():
        raise _missing()
    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as err:  # protobuf and onnx raise several unrelated types
        raise InputError(f"{source.name} is not a readable ONNX model: {one_line(err)}") from err
    initializers = {t.name for t in model.graph.initializer}
    shapes: list[str] = []
    images: list[str] = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [
            d.dim_value if d.HasField("dim_value") else None
            for d in value.type.tensor_type.shape.dim
        ]
        fixed = input_shapes.get(value.name) or [1 if d is None else d for d in dims]
        if len(fixed) != len(dims):
            raise InputError(
                f"--input-shape {value.name}: {len(fixed)} dims given, the model has {len(dims)}"
            )
        if any(d is None for d in dims[1:]) and value.name not in input_shapes:
            raise InputError(
                f"{source.name}: input {value.name} has dynamic dims {dims}; onnx2tf needs them "
                f"fixed: pass --input-shape {value.name}=1,... (or --calibration data)"
            )
        shapes.append(f"{value.name}:{','.join(str(d) for d in fixed)}")
        if len(dims) == 4:
            images.append(value.name)
    base = [str(tool), "-i", str(source), "-ois", *shapes]
    if images:
        kept = _run(tool, [*base, "-kat", *images], source)
        if isinstance(kept, bytes):
            return Prebuilt(kept, "onnx", partial(onnx_reference, source))
    converted = _run(tool, base, source)
    if isinstance(converted, bytes):
        nhwc = tuple(images)
        return Prebuilt(converted, "onnx", partial(onnx_reference, source, nhwc=True), nhwc=nhwc)
    raise ConvertError(f"onnx2tf could not convert {source.name}: {converted}")


def _run(tool: Path, command: list[str], source: Path) -> bytes | str:
    """The float32 model bytes, or the last line onnx2tf printed when it failed."""
    env = {**os.environ, "PATH": f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory(prefix="edgefleet-onnx2tf-") as work:
        try:
            done = subprocess.run(  # noqa: S603 (our own argv, no shell)
                [*command, "-o", work], capture_output=True, text=True, timeout=TIMEOUT_S,
                check=False, env=env,
            )  # fmt: skip
        except subprocess.TimeoutExpired as err:
            raise ConvertError(f"onnx2tf took longer than {TIMEOUT_S} s on {source.name}") from err
        except OSError as err:
            raise ConvertError(f"cannot run onnx2tf ({tool}): {one_line(err)}") from err
        result = Path(work) / f"{source.stem}_float32.tflite"
        if done.returncode == 0 and result.is_file():
            return result.read_bytes()
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "error" in line]
        return f"exit {done.returncode}: {(errors or lines or ['no output'])[-1].strip()[:300]}"


def onnx_reference(source: Path, feeds: Mapping[str, Any], *, nhwc: bool = False) -> Any:
    """The ONNX model's first output on ``feeds`` (given in the model's input order; NHWC
    image feeds are transposed back to the model's NCHW when ``nhwc``)."""
    import numpy as np
    import onnx

    from converters.evaldata import batch_of
    from converters.onnx_graph import tensor_specs
    from converters.runtime import make_session, run_batched

    model = onnx.load(str(source), load_external_data=False)
    inputs, outputs = tensor_specs(model)
    session = make_session(model.SerializeToString(), what=source.name)
    values = [
        np.transpose(v, (0, 3, 1, 2)) if nhwc and np.ndim(v) == 4 else v for v in feeds.values()
    ]
    named = dict(zip((s.name for s in inputs), values, strict=True))
    return run_batched(session, named, batch=batch_of(inputs))[outputs[0].name]


def nhwc_copy(data: Path, work: Path) -> Path:
    """An ``.npz`` of NCHW rows rewritten as NHWC (every 4-D float array) in ``work``."""
    import numpy as np

    with np.load(data, allow_pickle=False) as archive:
        arrays = {
            k: np.transpose(archive[k], (0, 2, 3, 1)) if archive[k].ndim == 4 else archive[k]
            for k in archive.files
        }
    out = work / f"nhwc-{data.name}"
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return out


def find_python312() -> str | None:
    """A Python >= 3.12 that runs: ``$EDGEFLEET_PYTHON312``, pyenv's installed versions, then
    ``python3.12`` on PATH. Each is run once, because a pyenv shim is on PATH whether or not
    its version is enabled (found on a fresh machine: ``pyenv: python3.12: command not
    found``, exit 127, with 3.12.1 installed but not global)."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates = [
        os.environ.get("EDGEFLEET_PYTHON312"),
        *sorted(str(p) for p in pyenv.glob("3.1[2-9]*/bin/python3")),
        shutil.which("python3.12"),
    ]
    check = "import sys; raise SystemExit(sys.version_info < (3, 12))"
    for python in filter(None, candidates):
        try:
            subprocess.run([python, "-c", check], check=True, capture_output=True, timeout=60)  # noqa: S603
        except (OSError, subprocess.SubprocessError):
            continue
        return python
    return None


def install(target: Path | None = None) -> Path:
    """Make the onnx2tf tool venv with a Python >= 3.12 (:func:`find_python312`)."""
    target = target or tool_dir()
    python = find_python312()
    if python is None:
        raise SystemExit(
            "no Python >= 3.12 found: set EDGEFLEET_PYTHON312, or install one "
            "(~/.pyenv/versions/3.12*, python3.12 on PATH)"
        )
    if not (target / "bin" / "onnx2tf").is_file():
        subprocess.run([python, "-m", "venv", str(target)], check=True)  # noqa: S603
        pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)  # noqa: S603
        subprocess.run([*pip, *REQUIREMENTS], check=True)  # noqa: S603
    return target / "bin" / "onnx2tf"


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        raise SystemExit("usage: python -m converters.tflite.from_onnx install")
    sys.stdout.write(f"{install()}\n")
