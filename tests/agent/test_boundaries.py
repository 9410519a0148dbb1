"""The agent ships alone to a device: it imports no other part and nothing heavy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "fleet_server",
    "converters",
    "fastapi",
    "sqlmodel",
    "sqlalchemy",
    "tensorflow",
    "torch",
    "sklearn",
    "onnx",
    "amqtt",
    "httpx",
}


def test_no_forbidden_imports_in_source() -> None:
    offenders = []
    for path in sorted((ROOT / "agent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_runtime_is_imported_only_when_a_model_loads() -> None:
    code = (
        "import sys, agent.service, agent.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(FORBIDDEN | {'onnxruntime', 'ai_edge_litert'})!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


TENSOR_AGENT = """
import io, sys
from pathlib import Path
import numpy as np
import agent.service, agent.cli
from agent.engine import BackendOptions, load_model
from agent.inputs import InputItem
from agent.pipeline import prepare
from agent.state import Serving
serving = Serving.of(load_model(Path(sys.argv[1]), options=BackendOptions()))
buf = io.BytesIO()
np.save(buf, np.zeros((1, 64), np.float32))
name = serving.preprocess.tensor.name
row = InputItem("r", np.zeros(64, np.float32), tensor=True)
for item in (InputItem("a.npy", buf.getvalue()), row):
    job = prepare(item, serving)
    serving.results(serving.model.infer({name: job.tensor}), [job.geometry])
print(sorted(m for m in ("cv2", "paho") if m in sys.modules))
"""


def test_a_tensor_pipeline_never_loads_opencv_or_paho(digits_v1: Path) -> None:
    """cv2 (~20 MB RSS) loads only for image decode/resize, video and some postprocessors;
    paho only when an MQTT transport is created."""
    result = subprocess.run(
        [sys.executable, "-c", TENSOR_AGENT, str(digits_v1)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_an_image_input_loads_opencv_on_first_use(digits_v1: Path, tmp_path: Path) -> None:
    from tests.utils.artifacts import digits_images

    [image] = digits_images(tmp_path, 1)  # written here: the child must not import cv2 for it
    code = TENSOR_AGENT.replace(
        'print(sorted(m for m in ("cv2", "paho") if m in sys.modules))',
        'assert "cv2" not in sys.modules\n'
        "prepare(InputItem('x.png', Path(sys.argv[2]).read_bytes()), serving)\n"
        'print(sorted(m for m in ("cv2", "paho") if m in sys.modules))',
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(digits_v1), str(image)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['cv2']"
