"""The ``edgefleet agent`` parser and handlers, in process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from agent import cli
from tests.utils.artifacts import digits_images


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgefleet")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_parser() -> None:
    args = parse(["agent", "run", "--config", "/etc/edgefleet/agent.toml"])
    assert args.handler is cli.run_command and args.config == Path("/etc/edgefleet/agent.toml")
    args = parse(["agent", "infer", "art", "a.png", "b.npy", "--top-k", "5"])
    assert args.handler is cli.infer_command and args.top_k == 5
    assert args.inputs == [Path("a.png"), Path("b.npy")]
    with pytest.raises(SystemExit):
        parse(["agent", "infer", "art"])


def test_infer_top_k(digits_v1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = digits_images(tmp_path, 2)
    assert cli.infer_command(parse(["agent", "infer", str(digits_v1), *map(str, images)])) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in rows] == [str(p) for p in images]
    assert all(len(r["top_k"]) == 3 and r["model"] == "digits@1.0.0" for r in rows)
    scores = [t["score"] for t in rows[0]["top_k"]]
    assert scores == sorted(scores, reverse=True)


def test_infer_errors_are_json_lines(
    digits_v1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.png"
    args = parse(["agent", "infer", str(digits_v1), str(missing)])
    assert cli.infer_command(args) == 1
    row = json.loads(capsys.readouterr().out)
    assert row["file"] == str(missing) and "cannot read" in row["error"]


def test_infer_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.infer_command(parse(["agent", "infer", str(tmp_path / "nope"), "x.png"])) == 2
    assert "is not an artifact directory, .onnx or .tflite file" in capsys.readouterr().err
    assert cli.infer_command(parse(["agent", "infer", str(tmp_path), "x", "--top-k", "0"])) == 2


def test_infer_accepts_bare_model_files(
    digits_v1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #12: ``agent infer model.tflite img.jpg`` said "is not a directory"."""
    from tests.agent.media import sample_photo
    from tests.agent.onnx_models import conv_classifier

    # A flat-input model: no preprocessing can be guessed, a .npy tensor is served.
    tensor = tmp_path / "row.npy"
    np.save(tensor, np.zeros(64, np.float32))
    args = parse(["agent", "infer", str(digits_v1 / "model.onnx"), str(tensor)])
    assert cli.infer_command(args) == 0
    out, err = capsys.readouterr()
    assert "pass .npy tensors" in err and json.loads(out)["model"] == "bare@0.0.0"
    # An image model: RGB 0..1 at the input's size is assumed and said on stderr.
    model = tmp_path / "conv.onnx"
    model.write_bytes(conv_classifier(32, 3))
    assert cli.infer_command(parse(["agent", "infer", str(model), str(sample_photo())])) == 0
    out, err = capsys.readouterr()
    assert "assuming rgb 0..1 nchw 32x32" in err
    assert "error" not in json.loads(out)


def test_infer_refuses_a_broken_artifact(
    artifact_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (artifact_copy / "model.onnx").write_bytes(b"tampered")
    assert cli.infer_command(parse(["agent", "infer", str(artifact_copy), "x.png"])) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "model.onnx" in err


def test_run_with_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[mqtt]\nurl = 'mqtt://x'\nbogus = 1\n")
    assert cli.run_command(parse(["agent", "run", "--config", str(config)])) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert all(line.startswith(f"edgefleet agent: {config}: ") for line in lines), lines
    assert lines == [
        f"edgefleet agent: {config}: (root): Object missing required field `device_id`",
        f"edgefleet agent: {config}: mqtt: Object contains unknown field `bogus`",
    ]


def test_cli_module_imports_stdlib_only() -> None:
    import subprocess
    import sys

    code = (
        "import sys, agent.cli; "
        "heavy = {'numpy', 'onnxruntime', 'cv2', 'paho', 'pydantic'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == "[]"


def test_infer_prints_raw_outputs_for_other_tasks(
    artifact_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    import numpy as np

    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    manifest["task"] = "raw"
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    tensor = artifact_copy.parent / "row.npy"
    buf = io.BytesIO()
    np.save(buf, np.zeros(64, np.float32))
    tensor.write_bytes(buf.getvalue())
    assert cli.infer_command(parse(["agent", "infer", str(artifact_copy), str(tensor)])) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row["outputs"]) == {"label", "probabilities"}
    assert len(row["outputs"]["probabilities"]) == 10
    assert row["outputs"]["label"] == int(np.argmax(row["outputs"]["probabilities"]))


def test_bench_json_compares_agent_and_bare(
    digits_v1: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(["agent", "bench", str(digits_v1), "--runs", "50", "--json"])
    assert cli.bench_command(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "onnx" and result["threads"] == 1
    for side in ("agent_ms", "bare_ms"):
        p = result[side]
        assert 0 < p["p50"] <= p["p95"] <= p["p99"]
    assert result["overhead_ratio"] == round(
        result["agent_ms"]["p50"] / result["bare_ms"]["p50"], 4
    )
    assert result["rss_mb"] > 10


def test_bench_accepts_a_bare_model_file(
    digits_tflite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(["agent", "bench", str(digits_tflite / "model.tflite"), "--runs", "20"])
    assert cli.bench_command(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("tflite ") and "overhead (agent p50 / bare p50)" in out


def test_bench_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.bench_command(parse(["agent", "bench", str(tmp_path / "none.onnx")])) == 2
    (tmp_path / "model.txt").write_text("x")
    assert cli.bench_command(parse(["agent", "bench", str(tmp_path / "model.txt")])) == 1
    assert "not an artifact directory" in capsys.readouterr().err
