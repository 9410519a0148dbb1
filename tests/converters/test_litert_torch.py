"""PyTorch → TFLite through litert-torch, from its own tool venv (``python -m
converters.tflite.from_torch install``; ``.ci/run`` makes it), and ``.pt2`` programs
(``torch.export.save``) → ONNX in this process. Without the tool venv the TFLite test skips,
and under ``EDGEFLEET_REQUIRE_SERVICES=1`` it fails instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converters.api import convert
from converters.errors import InputError
from converters.options import ConvertOptions
from converters.tflite.from_torch import find_tool
from edgefleet.artifact import load_artifact
from tests.converters.factories import leftovers
from tests.utils.required import missing

pytestmark = pytest.mark.slow
QUICK: dict[str, Any] = {
    "latency_warmup": 2,
    "latency_runs": 10,
    "input_shapes": {"input": [1, 3, 16, 16]},
}


@pytest.fixture(scope="module")
def tool() -> Path:
    found = find_tool()
    if found is None or not found.is_file():
        missing("litert-torch tool venv missing: python -m converters.tflite.from_torch install")
    return found


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")

    class Small(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 5)

        def forward(self, x: Any) -> Any:
            return torch.softmax(self.fc(self.conv(x).mean((2, 3))), 1)

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pt2") / "small.pt2"
    exported = torch.export.export(Small().eval(), (torch.zeros(1, 3, 16, 16),))
    torch.export.save(exported, str(path))
    return path


def test_a_pt2_program_converts_to_onnx(program: Path, tmp_path: Path) -> None:
    result = convert(program, tmp_path / "o", ConvertOptions(**QUICK))
    manifest = load_artifact(tmp_path / "o")
    assert (manifest.format, manifest.source.framework) == ("onnx", "pytorch")
    assert {c.name: c for c in result.report.checks}["fidelity"].passed
    assert any("torch.export" in note for note in result.report.notes)


def test_a_pt2_program_converts_to_tflite_with_litert_torch(
    tool: Path, program: Path, tmp_path: Path
) -> None:
    result = convert(program, tmp_path / "t", ConvertOptions(**QUICK, format="tflite"))
    manifest = load_artifact(tmp_path / "t")
    assert (manifest.format, manifest.source.framework) == ("tflite", "pytorch")
    assert manifest.inputs[0].shape == [1, 3, 16, 16]
    assert {c.name: c for c in result.report.checks}["fidelity"].passed


def test_torchscript_cannot_take_the_litert_torch_road(tool: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    source = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(4, 2), torch.zeros(1, 4)), str(source))
    options = ConvertOptions(format="tflite", input_shapes={"input": [1, 4]})
    with pytest.raises(InputError, match="TorchScript archive cannot"):
        convert(source, tmp_path / "o", options)
    assert leftovers(tmp_path, "o") == []
