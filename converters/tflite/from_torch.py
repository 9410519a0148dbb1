"""PyTorch → TFLite through litert-torch, run from its own tool venv.

litert-torch pulls JAX, transformers and a quantizer (hundreds of MB) and pins pydantic and
typing-extensions below what the server uses, so it lives in a separate Python 3.11 venv with
the local torch 2.13.0 CPU build (``python -m converters.tflite.from_torch install``, cached
under ``~/.cache/edgefleet/tools/litert-torch``; ``EDGEFLEET_LITERT_TORCH`` names another
venv's ``python``). It converts an ``nn.Module`` through ``torch.export``: a ``.pt2``
(``torch.export.save``) or, with ``--trust-pickle``, a pickled module. The module itself,
run with torch in this process, is the reference the TFLite artifact is validated against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converters.errors import ConvertError, InputError
from converters.options import ConvertOptions
from converters.tflite.prebuilt import Prebuilt

ENV = "EDGEFLEET_LITERT_TORCH"
REQUIREMENTS = ("torch==2.13.0", "litert-torch==0.10.*")
JOB = Path(__file__).with_name("litert_torch_job.py")
TIMEOUT_S = 900


def tool_dir() -> Path:
    return Path.home() / ".cache" / "edgefleet" / "tools" / "litert-torch"


def find_tool() -> Path | None:
    given = os.environ.get(ENV)
    if given:
        return Path(given)
    default = tool_dir() / "bin" / "python"
    return default if (tool_dir() / "bin" / "litert-torch-installed").is_file() else None


def torch_to_tflite(source: Path, *, options: ConvertOptions) -> Prebuilt:
    """The float32 TFLite bytes of the PyTorch model at ``source``, with its reference."""
    from converters.sources.torch_source import TorchLoader

    tool = find_tool()
    if tool is None or not tool.is_file():
        raise InputError(
            "PyTorch → TFLite needs litert-torch (its own venv): run "
            "'python -m converters.tflite.from_torch install' or set EDGEFLEET_LITERT_TORCH"
        )
    loaded = TorchLoader().load(source, options=options)  # the reference, in this process
    shapes = [list(s) for s in options.input_shapes.values()]
    with tempfile.TemporaryDirectory(prefix="edgefleet-litert-torch-") as work:
        out = Path(work) / "model.tflite"
        job = {"source": str(source), "out": str(out), "shapes": shapes,
               "trust_pickle": options.trust_pickle}  # fmt: skip
        try:
            done = subprocess.run(  # noqa: S603 (our own argv, no shell)
                [str(tool), "-I", str(JOB), json.dumps(job)], capture_output=True, text=True,
                timeout=TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as err:
            raise ConvertError(f"litert-torch took longer than {TIMEOUT_S} s") from err
        except OSError as err:
            raise ConvertError(f"cannot run the litert-torch venv ({tool}): {err}") from err
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        last = lines[-1].strip()[:400] if lines else f"exit {done.returncode}"
        if done.returncode == 2:
            raise InputError(last)
        if done.returncode != 0 or not out.is_file():
            raise ConvertError(f"PyTorch → TFLite: {last}")
        model = out.read_bytes()
    names = [i.name for i in loaded.onnx_model.graph.input]
    first = loaded.onnx_model.graph.output[0].name

    def reference(feeds: Mapping[str, Any]) -> Any:
        return loaded.reference(dict(zip(names, feeds.values(), strict=True)))[first]

    return Prebuilt(model, "pytorch", reference)


def install(target: Path | None = None) -> Path:
    """Make the litert-torch tool venv (Python 3.11: the local torch 2.13.0 build is for it)."""
    target = target or tool_dir()
    marker = target / "bin" / "litert-torch-installed"
    if not marker.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)  # noqa: S603
        pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)  # noqa: S603
        subprocess.run([*pip, *REQUIREMENTS], check=True)  # noqa: S603
        marker.write_text("ok\n")
    return target / "bin" / "python"


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        raise SystemExit("usage: python -m converters.tflite.from_torch install")
    sys.stdout.write(f"{install()}\n")
