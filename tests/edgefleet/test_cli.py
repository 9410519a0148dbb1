"""The ``edgefleet`` command: every subcommand registers, helps, and names missing extras."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgefleet.cli import SUBCOMMANDS, build_parser, main, missing_extra_message


def test_every_subcommand_is_registered() -> None:
    parser = build_parser()
    for command in SUBCOMMANDS:
        with pytest.raises(SystemExit) as info:
            parser.parse_args([command, "--help"])
        assert info.value.code == 0


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("fastapi", "server"),
        ("onnxruntime", "agent"),
        ("skl2onnx", "convert"),
        ("torch", "convert-torch"),
    ],
)
def test_missing_extra_names_the_extra(module: str, extra: str) -> None:
    err = ModuleNotFoundError(f"No module named '{module}'", name=f"{module}.sub")
    message = missing_extra_message(err, "x")
    assert f"pip install 'edgefleet[{extra}]'" in message and "\n" not in message


def test_missing_extra_is_reported_by_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(_args: object) -> int:
        raise ModuleNotFoundError("No module named 'sqlmodel'", name="sqlmodel")

    monkeypatch.setattr("edgefleet.demo_cli._run", handler)
    assert main(["demo"]) == 3
    assert "edgefleet[server]" in capsys.readouterr().err


def test_module_entry_point_prints_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith("edgefleet ")


def test_running_one_subcommand_imports_only_its_cli_module() -> None:
    """``edgefleet agent ...`` on a device does not import the server's or converter's CLI."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from edgefleet.cli import main\n"
        "try:\n"
        "    main(['agent', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fleet_server', 'converters') or m == 'edgefleet.demo_cli')\n"
        "print(loaded, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(("command", "extra"), [("server", "server"), ("convert", "convert")])
def test_missing_pydantic_names_the_commands_own_extra(command: str, extra: str) -> None:
    err = ModuleNotFoundError("No module named 'pydantic'", name="pydantic")
    assert f"pip install 'edgefleet[{extra}]'" in missing_extra_message(err, command)
