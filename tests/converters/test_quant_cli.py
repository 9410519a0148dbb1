"""The CLI's quantization flags, keygen, progress/--json streams, and the PyTorch loader."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters import cli
from converters.api import convert
from converters.errors import InputError
from converters.options import ConvertOptions
from edgefleet.artifact import load_artifact
from edgefleet.signing import load_private_key
from tests.converters.conftest import CnnSetup
from tests.converters.factories import (
    convert_without,
    fragile_onnx,
    leftovers,
    save_onnx,
    write_npz,
)

REPO = Path(__file__).resolve().parents[2]
QUICK: dict[str, Any] = {
    "latency_warmup": 3,
    "latency_runs": 20,
    "gate_rounds": 4,
    "gate_runs_per_round": 10,
    "calibration_methods": ["minmax"],
}


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgefleet")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["convert", *argv])


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "converters", *argv],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_quantization_flags_reach_the_options() -> None:
    args = _parse(
        "m.onnx", "-o", "o", "--calibration", "c.npz", "--quantize", "int8", "--max-drop",
        "0.02", "--target", "rpi5", "--calibration-method", "minmax", "--calibration-method",
        "entropy", "--trust-pickle", "--quiet", "--min-speedup", "1.2",
    )  # fmt: skip
    _, _, options = cli.options_from_args(args)
    assert options.calibration == Path("c.npz") and options.quantize_mode == "int8"
    assert (options.max_drop, options.target) == (0.02, "rpi5")
    assert options.calibration_methods == ["minmax", "entropy"]
    assert options.trust_pickle and not options.progress and options.min_speedup == 1.2
    _, _, default = cli.options_from_args(_parse("m.onnx", "-o", "o"))
    assert default.quantize_mode == "none" and default.progress
    _, _, calibrated = cli.options_from_args(_parse("m.onnx", "-o", "o", "--calibration", "c"))
    assert calibrated.quantize_mode == "auto"
    with pytest.raises(InputError, match="max_drop"):
        cli.options_from_args(_parse("m.onnx", "-o", "o", "--max-drop", "2"))


def test_keygen_writes_a_usable_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    assert cli.handle(_parse("keygen", "-o", str(keys), "--json")) == 0
    info = json.loads(capsys.readouterr().out)
    assert load_private_key((keys / "signing.pem").read_bytes()) is not None
    assert info["public"] == str(keys / "signing.pub.pem") and info["key_id"]
    assert cli.handle(_parse("keygen", "-o", str(keys))) == 2
    assert "pass --force" in capsys.readouterr().err
    assert cli.handle(_parse("keygen", "-o", str(keys), "--force")) == 0


@pytest.mark.integration
def test_cli_json_stdout_is_clean_and_progress_goes_to_stderr(tmp_path: Path) -> None:
    source = save_onnx(fragile_onnx(), tmp_path / "f.onnx")
    rng = np.random.default_rng(0)
    calib = write_npz(tmp_path / "c.npz", x=rng.standard_normal((64, 16)).astype(np.float32))
    done = _run(
        str(source), "-o", str(tmp_path / "out"), "--calibration", str(calib),
        "--calibration-method", "entropy", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # nothing but the JSON document on stdout
    report = document["report"]["quantization"]
    assert report["chosen"] and report["candidates"][0]["name"] == "fp32"
    # Phase lines on stderr: this MLP's int8/fp16 are not faster than fp32 here, so the latency
    # probe (not the gate) is where the candidates end.
    assert "normalising the fp32 model" in done.stderr and "latency probe" in done.stderr
    assert report["measured_on"].startswith("this host, ")
    assert "timed    on" not in done.stderr  # no --target: this host is the target
    quiet = _run(
        str(source), "-o", str(tmp_path / "q"), "--calibration", str(calib), "--quiet",
        "--calibration-method", "minmax", "--target", "rpi5", cwd=tmp_path,
    )  # fmt: skip
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "candidate" in quiet.stdout and "\n  chosen   " in quiet.stdout
    # --target names a device the gate did not run on: the summary says where it timed.
    assert "  timed    on this host, " in quiet.stdout and "not on rpi5 (aarch64)" in quiet.stdout
    bad = write_npz(tmp_path / "bad.npz", x=np.zeros((4, 5), np.float32))
    failed = _run(str(source), "-o", str(tmp_path / "b"), "--calibration", str(bad), cwd=tmp_path)
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        "edgefleet convert: error: calibration data bad.npz: x dimension 1 is 5; the input needs 16"
    ]
    assert leftovers(tmp_path, "b") == []


# -- PyTorch ------------------------------------------------------------------------------------


def test_pickled_module_needs_trust(cnn_setup: CnnSetup, tmp_path: Path) -> None:
    import torch

    pickled = tmp_path / "module.pth"
    torch.save(cnn_setup.net, pickled)
    options = {**QUICK, "task": "classification", "eval_data": cnn_setup.eval_npz}
    with pytest.raises(InputError, match="--trust-pickle"):
        convert(pickled, tmp_path / "no", ConvertOptions(**options))
    assert leftovers(tmp_path, "no") == []
    with pytest.warns(UserWarning, match="weights_only=False"):
        result = convert(
            pickled,
            tmp_path / "yes",
            ConvertOptions(**options, trust_pickle=True, input_shapes={"input": [1, 1, 28, 28]}),
        )
    assert result.manifest.source.framework == "pytorch"
    assert "loaded as pickle" in result.report.notes
    assert result.manifest.precision == "fp32"  # no --calibration: quantize defaults to none
    top1 = result.manifest.metrics.top1
    assert top1 is not None and top1 > 0.8
    state = tmp_path / "state.pth"
    torch.save(cnn_setup.net.state_dict(), state)
    with pytest.raises(InputError, match="not an nn.Module"):
        convert(state, tmp_path / "s", ConvertOptions(**options, trust_pickle=True))


def test_torch_needs_a_shape(cnn_setup: CnnSetup, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--input-shape input="):
        convert(cnn_setup.torchscript, tmp_path / "o", ConvertOptions(**QUICK))


def test_torchscript_exports_with_a_dynamic_batch(cnn_setup: CnnSetup, tmp_path: Path) -> None:
    result = convert(
        cnn_setup.torchscript,
        tmp_path / "o",
        ConvertOptions(
            **QUICK, eval_data=cnn_setup.eval_npz, input_shapes={"input": [1, 1, 28, 28]}
        ),
    )
    assert [t.shape for t in result.manifest.inputs] == [["batch", 1, 28, 28]]
    assert load_artifact(tmp_path / "o") == result.manifest
    checks = {c.name: c for c in result.report.checks}
    assert checks["fidelity"].passed


def test_torch_module_with_two_inputs_and_two_outputs(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class TwoByTwo(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(3, 3)

        def forward(self, a: Any, b: Any) -> tuple[Any, Any]:
            h = self.a(a) + self.b(b)
            return torch.softmax(h, dim=1), h.sum(dim=1, keepdim=True)

    torch.manual_seed(0)
    source = tmp_path / "two.pt"
    traced = torch.jit.trace(TwoByTwo(), (torch.zeros(1, 4), torch.zeros(1, 3)))
    torch.jit.save(traced, str(source))
    shapes = {"a": [1, 4], "b": [1, 3]}
    result = convert(source, tmp_path / "o", ConvertOptions(**QUICK, input_shapes=shapes))
    assert [t.name for t in result.manifest.inputs] == ["a", "b"]
    assert [t.name for t in result.manifest.outputs] == ["output_0", "output_1"]
    fidelity = {c.name: c for c in result.report.checks}["fidelity"]
    assert fidelity.passed and "output_0, output_1" in fidelity.message
    # Shapes that forward() rejects: one clear line, nothing written.
    with pytest.raises(InputError, match="forward\\(\\) fails on inputs"):
        convert(
            source,
            tmp_path / "bad",
            ConvertOptions(**QUICK, input_shapes={"a": [1, 5], "b": [1, 3]}),
        )
    assert leftovers(tmp_path, "bad") == []


@pytest.mark.integration
def test_missing_torch_names_the_extra(tmp_path: Path) -> None:
    result = convert_without("torch", "m.pt", tmp_path)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "pip install 'edgefleet[convert-torch]'" in lines[0]
    assert not (tmp_path / "o").exists()
