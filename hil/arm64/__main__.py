"""``python -m hil.arm64 [--arch armhf] build|shell|info``: an emulated board's root filesystem."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence

from edgefleet import binfmt
from hil.arm64.rootfs import (
    Board,
    BuildError,
    RootfsSpec,
    Unavailable,
    board_key,
    cache_root,
    emulation_problem,
    ensure_board,
    find_board,
)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hil.arm64", description=__doc__)
    parser.add_argument(
        "--arch",
        choices=sorted(binfmt.ENTRIES),
        default="arm64",
        help="the board's Debian architecture (armhf: the 32-bit Raspberry Pi OS class)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the root filesystem unless it is cached")
    sub.add_parser("shell", help="an interactive shell in the board (builds it first)")
    sub.add_parser("info", help="the cache key, path and state of the board")
    return parser.parse_args(argv)


def _freeze(board: Board) -> list[str]:
    done = board.run(["python3", "-m", "pip", "freeze"], check=False)
    return done.stdout.split() if done.returncode == 0 else [f"pip freeze failed: {done.stderr}"]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    spec = RootfsSpec.for_arch(args.arch)
    try:
        if args.command == "info":
            board = find_board(spec)
            print(
                json.dumps(
                    {
                        "key": board_key(spec),
                        "cache": str(cache_root()),
                        "built": board is not None,
                        "emulation_problem": emulation_problem(spec.arch),
                        **({"board": board.info()} if board is not None else {}),
                        # What the pins pulled in, resolved at build time (not in the key).
                        **({"pip_freeze": _freeze(board)} if board is not None else {}),
                    },
                    indent=2,
                )
            )
            return 0
        started = time.monotonic()
        cached = find_board(spec) is not None
        board = ensure_board(spec)
        if args.command == "build":
            state = "cached" if cached else "built"
            print(f"{state} {board.path} in {time.monotonic() - started:.1f} s")
            return 0
        return subprocess.call(board.command(["/bin/bash", "-l"]), env=board.env())
    except (Unavailable, BuildError) as err:
        print(f"hil.arm64: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
