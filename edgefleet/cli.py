"""``edgefleet``: one command, one subcommand per part.

Each part's ``cli`` module is light (standard library at module level) and registers its own
subparser, so ``--help`` works everywhere without the extras. Heavy imports happen inside the
handlers; a missing extra ends the run with one line naming the extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from edgefleet import __version__


class Registrar(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


#: subcommand → module that registers it (hand-written: no plugin discovery).
SUBCOMMANDS: dict[str, str] = {
    "convert": "converters.cli",
    "agent": "agent.cli",
    "server": "fleet_server.cli",
    "fleet": "fleet_server.client.cli",
    "demo": "edgefleet.demo_cli",
    "hil": "edgefleet.hil_cli",
}

#: A missing top-level module → the extra that provides it.
EXTRA_FOR_MODULE: dict[str, str] = {
    "numpy": "agent",
    "onnxruntime": "agent",
    "cv2": "agent",
    "paho": "agent",
    "ai_edge_litert": "agent",
    "cryptography": "agent",
    "fastapi": "server",
    "uvicorn": "server",
    "sqlmodel": "server",
    "sqlalchemy": "server",
    "alembic": "server",
    "amqtt": "server",
    "psycopg": "server",
    "prometheus_client": "server",
    "pydantic_settings": "server",
    "multipart": "server",
    "httpx": "cli",
    "rich": "cli",
    "onnx": "convert",
    "skl2onnx": "convert",
    "sklearn": "convert",
    "joblib": "convert",
    "tensorflow": "convert-tf",
    "torch": "convert-torch",
}

#: Modules more than one extra provides (pydantic: server and convert) → the command's own extra.
EXTRA_FOR_COMMAND: dict[str, str] = {
    "convert": "convert",
    "agent": "agent",
    "server": "server",
    "fleet": "cli",
}
SHARED_MODULES = frozenset({"pydantic", "pydantic_core"})

Handler = Callable[[argparse.Namespace], int]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) just the one subcommand being run: a device running
    ``edgefleet agent run`` does not import the server's and converter's CLI modules (~0.6 MB
    RSS)."""
    parser = argparse.ArgumentParser(
        prog="edgefleet",
        description="Convert models for edge devices, run them, and roll them out to a fleet.",
    )
    parser.add_argument("--version", action="version", version=f"edgefleet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        module: Registrar = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def missing_extra_message(err: ModuleNotFoundError, command: str) -> str:
    top = (err.name or "").split(".")[0]
    if top in SHARED_MODULES:
        extra = EXTRA_FOR_COMMAND.get(command)
    else:
        extra = EXTRA_FOR_MODULE.get(top)
    if extra is None:
        return f"edgefleet {command}: missing Python module {err.name!r}"
    return (
        f"edgefleet {command}: needs the '{extra}' extra (module {top!r} is not installed); "
        f"run: pip install 'edgefleet[{extra}]'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_in[0] if args_in and args_in[0] in SUBCOMMANDS else None)
    args = parser.parse_args(args_in)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ModuleNotFoundError as err:
        print(missing_extra_message(err, args.command), file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
