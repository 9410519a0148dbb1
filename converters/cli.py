"""``edgefleet convert``: the converter's command line (standard library only at import).

Parsing happens in :func:`options_from_args`, the work in :func:`handle`, which returns the exit
code: 0 on success, 2 for bad input or usage, 1 when conversion or validation fails. A failure is
one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from converters.options import ConvertOptions

DESCRIPTION = (
    "Convert a trained model (scikit-learn .pkl/.joblib or .onnx) into a validated ONNX artifact "
    "with a manifest, a self-test and a report. Pickles run code when loaded: only convert "
    "pickles you trust."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, metavar="SOURCE", help="Model file to convert.")
    parser.add_argument(
        "-o",
        "--out",
        dest="out_dir",
        type=Path,
        required=True,
        metavar="OUT_DIR",
        help="Artifact directory to create (must not exist unless --force).",
    )
    parser.add_argument("--name", help="Model name (default: the source file's stem).")
    parser.add_argument("--version", help="Model version (default: the UTC time).")
    parser.add_argument(
        "--preprocessing",
        type=Path,
        metavar="FILE.json",
        help="JSON Preprocessing object (image → tensor) copied into the manifest.",
    )
    parser.add_argument("--labels", type=Path, metavar="FILE", help="Class names, one per line.")
    parser.add_argument(
        "--task",
        choices=["classification", "regression", "raw"],
        help="What the outputs mean (default: from the model).",
    )
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D1,D2,...",
        help="Concrete shape of an input (repeatable), e.g. input=1,64.",
    )
    parser.add_argument(
        "--eval",
        dest="eval_data",
        type=Path,
        metavar="DATA.npz",
        help="Eval data: arrays x (or x/<input>) and optional labels y.",
    )
    parser.add_argument(
        "--sign-key", type=Path, metavar="PEM", help="Ed25519 private key to sign the manifest."
    )
    parser.add_argument(
        "--json", action="store_true", help="Print the manifest and report as JSON."
    )
    parser.add_argument(
        "--force", action="store_true", help="Replace an existing artifact at OUT_DIR."
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "convert", help="Convert a model into a validated artifact.", description=DESCRIPTION
    )
    add_arguments(parser)
    parser.set_defaults(handler=handle)


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser (``python -m converters``), the same arguments as the subcommand."""
    parser = argparse.ArgumentParser(prog="edgefleet convert", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(handler=handle, command="convert")
    return parser


def options_from_args(args: argparse.Namespace) -> tuple[Path, Path, ConvertOptions]:
    """Turn parsed arguments into ``convert``'s inputs; InputError (one line) if they are bad."""
    from pydantic import ValidationError

    from converters.errors import InputError
    from converters.inputs import parse_input_shape, read_labels, read_preprocessing
    from converters.options import ConvertOptions
    from edgefleet.contract.parsing import describe_validation_error

    shapes: dict[str, list[int]] = {}
    for text in args.input_shape:
        name, dims = parse_input_shape(text)
        if name in shapes:
            raise InputError(f"--input-shape {name} is given twice")
        shapes[name] = dims
    try:
        options = ConvertOptions(
            name=args.name,
            version=args.version,
            task=args.task,
            preprocessing=read_preprocessing(args.preprocessing) if args.preprocessing else None,
            labels=read_labels(args.labels) if args.labels else None,
            input_shapes=shapes,
            eval_data=args.eval_data,
            sign_key=args.sign_key,
            force=args.force,
        )
    except ValidationError as err:
        raise InputError(f"bad option: {describe_validation_error(err)}") from err
    return args.source, args.out_dir, options


def handle(args: argparse.Namespace) -> int:
    """Run one conversion; print a summary (or JSON); return the exit code."""
    from converters.errors import ConvertError, one_line

    try:
        source, out_dir, options = options_from_args(args)
        from converters.api import convert
        from converters.report import summary

        result = convert(source, out_dir, options)
    except ConvertError as err:
        print(f"edgefleet convert: error: {one_line(err, limit=500)}", file=sys.stderr)
        return err.exit_code
    if args.json:
        document = {
            "artifact_dir": str(result.artifact_dir),
            "manifest": json.loads(result.manifest.to_json()),
            "report": json.loads(result.report.to_json()),
        }
        print(json.dumps(document, indent=2))
    else:
        print(summary(result))
    return 0
