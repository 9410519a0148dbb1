"""``pip install edgefleet[agent]`` is what a Raspberry Pi gets: prove it stays light.

Builds the package from a clean copy of the source into a fresh venv with only the ``agent``
extra, then checks what got installed, that every agent module imports there without pulling
the server or converter stacks, and that every subcommand's ``--help`` works without extras.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_DISTS = {
    "fastapi", "starlette", "uvicorn", "sqlmodel", "sqlalchemy", "alembic", "amqtt",
    "tensorflow", "tensorflow-cpu", "torch", "skl2onnx", "scikit-learn", "onnx",
    "boto3", "botocore", "s3transfer", "moto",
    # The device process never imports pydantic (RSS budget); the contract is msgspec.
    "pydantic", "pydantic-core", "pydantic-settings",
}  # fmt: skip
FORBIDDEN_MODULES = {"fastapi", "sqlmodel", "sqlalchemy", "torch", "tensorflow", "pydantic"}
FORBIDDEN_MODULES |= {"fleet_server", "converters", "amqtt", "sklearn", "boto3", "botocore"}

IMPORT_ALL_AGENT_MODULES = f"""
import importlib, pkgutil, sys
import agent
names = [m.name for m in pkgutil.walk_packages(agent.__path__, "agent.")]
for name in names:
    importlib.import_module(name)
bad = sorted(set({sorted(FORBIDDEN_MODULES)!r}) & {{m.split(".")[0] for m in sys.modules}})
assert not bad, f"agent pulled heavy modules: {{bad}}"
import onnxruntime, cv2, numpy, paho.mqtt.client
print(len(names))
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_agent_extra_installs_light(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in ("edgefleet", "agent", "fleet_server", "converters", "firmware_configs"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], tmp_path).returncode == 0
    py = str(venv / "bin" / "python")
    install = _run([py, "-m", "pip", "install", "--quiet", f"{src}[agent]"], tmp_path)
    assert install.returncode == 0, install.stderr[-3000:]

    listed = _run([py, "-m", "pip", "list", "--format", "json"], tmp_path)
    dists = {d["name"].lower().replace("_", "-") for d in json.loads(listed.stdout)}
    assert {"onnxruntime", "numpy", "paho-mqtt", "opencv-python-headless", "msgspec"} <= dists
    assert not (FORBIDDEN_DISTS & dists), sorted(FORBIDDEN_DISTS & dists)

    no_pydantic = "import importlib.util as u; assert u.find_spec('pydantic') is None"
    assert _run([py, "-c", no_pydantic], tmp_path).returncode == 0, "pydantic is installed"
    imported = _run([py, "-c", IMPORT_ALL_AGENT_MODULES], tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert int(imported.stdout.strip()) >= 5

    edgefleet = str(venv / "bin" / "edgefleet")
    for command in ("convert", "agent", "server", "fleet", "demo"):
        helped = _run([edgefleet, command, "--help"], tmp_path)
        assert helped.returncode == 0, (command, helped.stderr)
        assert "usage:" in helped.stdout

    server = _run([edgefleet, "server", "--data-dir", str(tmp_path / "d")], tmp_path)
    assert server.returncode == 3
    lines = server.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'edgefleet[server]'" in lines[0], server.stderr
    convert = _run(
        [edgefleet, "convert", str(tmp_path / "m.pkl"), "-o", str(tmp_path / "o")], tmp_path
    )
    assert convert.returncode == 3 and "edgefleet[convert]" in convert.stderr, convert.stderr
