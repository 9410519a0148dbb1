"""``edgefleet convert``: the parser, the handler's exit codes, and real subprocess runs."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converters import cli
from edgefleet.artifact import load_artifact
from edgefleet.signing import verify_manifest
from tests.converters.conftest import DigitsSetup, KeyPair
from tests.converters.factories import leftovers, write_npz

REPO = Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefleet")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def _parse(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["convert", *argv])


def test_parser_defaults_and_every_flag() -> None:
    args = _parse("m.pkl", "-o", "out")
    assert (args.source, args.out_dir) == (Path("m.pkl"), Path("out"))
    assert (args.name, args.version, args.task, args.eval_data, args.sign_key) == (None,) * 5
    assert (args.input_shape, args.json, args.force) == ([], False, False)
    assert args.handler is cli.handle
    args = _parse(
        "m.onnx", "--out", "o", "--name", "n", "--version", "2", "--preprocessing", "p.json",
        "--labels", "l.txt", "--task", "raw", "--input-shape", "x=1,3", "--input-shape", "y=2",
        "--eval", "e.npz", "--sign-key", "k.pem", "--json", "--force",
    )  # fmt: skip
    assert args.input_shape == ["x=1,3", "y=2"]
    assert (args.preprocessing, args.labels, args.eval_data, args.sign_key) == (
        Path("p.json"), Path("l.txt"), Path("e.npz"), Path("k.pem"),
    )  # fmt: skip
    assert (args.task, args.json, args.force) == ("raw", True, True)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["m.pkl"],
        ["-o", "out"],
        ["m.pkl", "-o", "out", "--task", "keypoints"],
        ["m.pkl", "-o", "out", "--postprocess", "retinanet"],
        ["m.pkl", "-o", "out", "--quantize", "int4"],
        ["m.pkl", "-o", "out", "--max-drop", "lots"],
        ["m.pkl", "-o", "out", "--json=yes"],
    ],
)
def test_parser_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        _parse(*argv)
    assert err.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_options_from_args(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("a\nb\n")
    args = _parse(
        "m.pkl", "-o", "out", "--labels", str(tmp_path / "labels.txt"),
        "--input-shape", "input=1,64", "--name", "digits",
    )  # fmt: skip
    source, out, options = cli.options_from_args(args)
    assert (source, out) == (Path("m.pkl"), Path("out"))
    assert options.labels == ["a", "b"] and options.input_shapes == {"input": [1, 64]}
    assert options.name == "digits" and options.force is False


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-shape", "input=1x64"], "expected NAME=D1,D2"),
        (["--input-shape", "a=1", "--input-shape", "a=2"], "--input-shape a is given twice"),
        (["--name", "Bad Name!"], "bad option: name: Value error, invalid model name"),
        (["--version", "../1"], "bad option: version"),
        (["--task", "raw", "--labels", "LABELS"], "labels only make sense"),
        (
            ["--preprocessing", "PRE"],
            "invalid preprocessing: Expected `str`, got `int` - at `$.color`",
        ),
        (["--preprocessing", "HUGE"], "huge.json is 70000 bytes; the limit is 65536"),
        (["--labels", "NOPE"], "no such file"),
    ],
)
def test_handler_input_errors_are_one_line_exit_2(
    extra: list[str],
    message: str,
    digits_setup: DigitsSetup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "labels.txt").write_text("a\nb\n")
    (tmp_path / "pre.json").write_text('{"color": 1}')
    (tmp_path / "huge.json").write_text(" " * 70_000)
    files = {"LABELS": "labels.txt", "PRE": "pre.json", "HUGE": "huge.json", "NOPE": "nope.txt"}
    extra = [str(tmp_path / files[e]) if e in files else e for e in extra]
    args = _parse(str(digits_setup.models["logreg"].path), "-o", str(tmp_path / "out"), *extra)
    assert cli.handle(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgefleet convert: error: ")
    assert message in lines[0] or pytest.fail(f"{message!r} not in {lines[0]!r}")
    assert leftovers(tmp_path, "out") == []


def test_handler_success_json(
    digits_setup: DigitsSetup,
    signing_keys: KeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "art"
    args = _parse(
        str(digits_setup.models["pipeline"].path), "-o", str(out), "--json",
        "--eval", str(digits_setup.eval_npz), "--sign-key", str(signing_keys.private),
        "--version", "3.0.0",
    )  # fmt: skip
    assert cli.handle(args) == 0
    document = json.loads(capsys.readouterr().out)
    manifest = load_artifact(out)
    assert document["artifact_dir"] == str(out)
    assert document["manifest"]["signature"]["key_id"] == signing_keys.key_id
    assert document["report"]["checks"][0]["name"] == "fidelity"
    assert verify_manifest(manifest, [signing_keys.public.read_bytes()]) == signing_keys.key_id


def test_bad_signing_key_is_refused_before_work(
    digits_setup: DigitsSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "key.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"
    )
    args = _parse(
        str(digits_setup.models["logreg"].path), "-o", str(tmp_path / "out"),
        "--sign-key", str(tmp_path / "key.pem"),
    )  # fmt: skip
    assert cli.handle(args) == 2
    assert "--sign-key key.pem: not a PEM private key" in capsys.readouterr().err
    assert leftovers(tmp_path, "out") == []


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _edgefleet_cli_complete() -> bool:
    from edgefleet.cli import SUBCOMMANDS

    try:
        return all(importlib.util.find_spec(m) is not None for m in SUBCOMMANDS.values())
    except ModuleNotFoundError:
        return False


@pytest.mark.integration
@pytest.mark.parametrize("entry", [["-m", "converters"], ["-m", "edgefleet", "convert"]])
def test_cli_subprocess_success_and_failure(
    entry: list[str], digits_setup: DigitsSetup, tmp_path: Path
) -> None:
    if entry[1] == "edgefleet" and not _edgefleet_cli_complete():
        pytest.skip("another part's cli module is not in this checkout yet (edgefleet.cli)")
    out = tmp_path / "artifact"
    ok = _run(
        *entry, str(digits_setup.models["logreg"].path), "-o", str(out),
        "--eval", str(digits_setup.eval_npz), "--name", "digits", "--version", "1.0.0",
        cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "converted logreg.joblib (sklearn)" in ok.stdout and "top1     ok" in ok.stdout
    assert load_artifact(out).name == "digits"

    again = _run(*entry, str(digits_setup.models["logreg"].path), "-o", str(out), cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.splitlines() == [
        f"edgefleet convert: error: {out} already exists; pass --force to replace it"
    ]

    bad_eval = write_npz(tmp_path / "bad.npz", x=np.zeros((0, 64), dtype=np.float32))
    failed = _run(
        *entry, str(digits_setup.models["logreg"].path), "-o", str(tmp_path / "other"),
        "--eval", str(bad_eval), cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        "edgefleet convert: error: eval data bad.npz is empty (0 rows)"
    ]
    assert leftovers(tmp_path, "other") == []


def test_cli_module_imports_stdlib_only() -> None:
    code = (
        "import sys; import converters.cli; "
        "heavy = {'numpy', 'onnx', 'onnxruntime', 'sklearn', 'skl2onnx', 'pydantic'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    result = _run("-c", code, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    helped = _run("-m", "converters", "--help", cwd=REPO)
    assert helped.returncode == 0 and "--input-shape" in helped.stdout


BLOCK_SKLEARN = """
import importlib.abc, sys

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"sklearn", "skl2onnx"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Block())
"""


@pytest.mark.integration
def test_missing_extra_is_reported_before_input(tmp_path: Path) -> None:
    """Without scikit-learn, a .pkl conversion names the extra even if the file is missing."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_SKLEARN)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    result = subprocess.run(
        [sys.executable, "-m", "converters", str(tmp_path / "m.pkl"), "-o", str(tmp_path / "o")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "pip install 'edgefleet[convert]'" in lines[0], result.stderr
    assert not (tmp_path / "o").exists()
