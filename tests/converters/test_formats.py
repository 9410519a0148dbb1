"""The one pipeline's plugin boundary: the format registry, routing, and who imports whom."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from converters.errors import InputError
from converters.formats import FORMATS, route
from converters.options import ConvertOptions
from edgefleet.contract.manifest import Format

ROOT = Path(__file__).resolve().parents[2]


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.write_bytes(data)
    return path


def test_every_registered_format_is_a_contract_format_and_keyed_by_itself() -> None:
    assert set(FORMATS) == set(get_args(Format))
    for key, fmt in FORMATS.items():
        assert fmt.key == key
        assert callable(fmt.load) and callable(fmt.modules)


@pytest.mark.parametrize(
    ("name", "wanted", "fmt", "kind"),
    [
        ("m.joblib", None, "onnx", "sklearn"),
        ("m.pkl", "onnx", "onnx", "sklearn"),
        ("m.onnx", None, "onnx", "onnx"),
        ("m.onnx", "tflite", "tflite", "onnx"),
        ("m.pt", None, "onnx", "pytorch"),
        ("m.PTH", "tflite", "tflite", "pytorch"),
        ("m.keras", None, "tflite", "keras"),
        ("m.h5", "onnx", "onnx", "keras"),
        ("m.tflite", "tflite", "tflite", "tflite"),
        ("m.tflite", "all", "tflite", "tflite"),
    ],
)
def test_route_by_suffix_and_format(
    tmp_path: Path, name: str, wanted: str | None, fmt: str, kind: str
) -> None:
    got_fmt, got_kind = route(_touch(tmp_path / name), ConvertOptions(format=wanted))
    assert (got_fmt.key, got_kind) == (fmt, kind)
    assert all(isinstance(m, str) and m for m in got_fmt.modules(got_kind))


def test_a_saved_model_directory_goes_to_tflite_unless_onnx_is_asked(tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    folder.mkdir()
    _touch(folder / "saved_model.pb")
    fmt, kind = route(folder, ConvertOptions())
    assert (fmt.key, kind) == ("tflite", "savedmodel")
    assert "tensorflow" in fmt.modules(kind)
    fmt, kind = route(folder, ConvertOptions(format="onnx"))
    assert (fmt.key, kind) == ("onnx", "keras")


@pytest.mark.parametrize(
    ("name", "wanted", "message"),
    [
        ("m.txt", None, "unsupported source 'm.txt'"),
        ("m", None, "unsupported source 'm'"),
        ("m.tflite.exe", None, "unsupported source"),
        ("m.tflite", "onnx", "is a TFLite model already"),
        ("m.joblib", "tflite", "converts to ONNX only"),
        ("m.npz", "tflite", "converts to ONNX only"),
    ],
)
def test_route_refuses_with_one_line(
    tmp_path: Path, name: str, wanted: str | None, message: str
) -> None:
    with pytest.raises(InputError, match=message) as caught:
        route(_touch(tmp_path / name), ConvertOptions(format=wanted))
    assert "\n" not in str(caught.value)


def test_a_directory_without_a_saved_model_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-model.onnx"
    folder.mkdir()
    _touch(folder / "variables.bin")
    fmt, kind = route(folder, ConvertOptions())  # routed by suffix; the pipeline checks it
    from converters.api import convert

    with pytest.raises(InputError, match="not-a-model.onnx is not a readable ONNX model") as err:
        convert(folder, tmp_path / "out", ConvertOptions())
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    assert (fmt.key, kind) == ("onnx", "onnx")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_formats_do_not_import_the_entry_point_or_each_other() -> None:
    """One pipeline: formats are plugins of it, never callers of it or of another format."""
    offenders = []
    plugins = [
        *(ROOT / "converters" / "formats").glob("*.py"),
        *(ROOT / "converters").glob("tflite/*.py"),
    ]
    for path in sorted(plugins):
        for name in _imports(path):
            if name in ("converters.api", "converters.pipeline"):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
            own = f"converters.formats.{path.stem}"
            if (
                path.parent.name == "formats"
                and path.stem not in ("__init__", "base")
                and name.startswith("converters.formats.")
                and name not in (own, "converters.formats.base")
            ):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_the_pipeline_and_every_format_import_without_any_framework() -> None:
    """Formats are registered at import, so importing them must not need an extra: an
    ONNX-only install imports the TFLite format without LiteRT or TensorFlow."""
    code = (
        "import sys, importlib.abc\n"
        "BLOCK = {'tensorflow', 'ai_edge_litert', 'torch', 'onnx', 'onnxruntime', 'sklearn',"
        " 'skl2onnx', 'tf2onnx', 'onnx2tf'}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in BLOCK:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import converters.api, converters.pipeline, converters.formats\n"
        "print(sorted(converters.formats.FORMATS))\n"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['onnx', 'tflite']"
