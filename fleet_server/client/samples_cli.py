"""The ``edgefleet fleet capture`` and ``edgefleet fleet samples`` parsers (standard library
only, like :mod:`.cli`). These names and flags are a contract: other tools call them."""

from __future__ import annotations

import argparse
from pathlib import Path

from fleet_server.client.argtypes import share as _share

REASONS = (
    "low_confidence",
    "margin",
    "outside_reference",
    "class",
    "random",
    "shadow_disagreement",
)
FORMATS = ("imagefolder", "coco", "labelstudio")


def register(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    capture = actions.add_parser("capture", help="which hard examples devices send back")
    sub = capture.add_subparsers(dest="capture_command", metavar="ACTION", required=True)
    leaf = sub.add_parser(
        "set",
        parents=[common],
        help="set the capture policy of MODEL (or of one --version); replaces the whole policy",
        description="Reasons left out are off; budgets left out take the contract's defaults.",
    )
    leaf.add_argument("name", metavar="MODEL")
    leaf.add_argument("--version", metavar="V", help="this version only (overrides the model's)")
    leaf.add_argument("--low-confidence", type=_share, metavar="T", help="capture if top-1 < T")
    leaf.add_argument("--margin", type=_share, metavar="M", help="capture if top-1 - top-2 < M")
    leaf.add_argument(
        "--outside-reference", type=_share, metavar="S", help="capture if the input score > S"
    )
    leaf.add_argument(
        "--class", dest="classes", action="append", metavar="C", help="predicted class (repeat)"
    )
    leaf.add_argument("--random", type=_share, metavar="F", help="unbiased fraction, 0..1")
    leaf.add_argument("--max-per-hour", type=_count, metavar="N")
    leaf.add_argument("--max-per-day", type=_count, metavar="N")
    leaf.add_argument("--max-mb-per-day", type=float, metavar="N", help="megabytes (10^6)")
    leaf.add_argument("--max-side", type=_count, metavar="PX")
    leaf.add_argument("--jpeg-quality", type=_count, metavar="Q", help="1..100")
    leaf.set_defaults(action="capture_set")
    leaf = sub.add_parser("show", parents=[common], help="the capture policy of MODEL")
    leaf.add_argument("name", metavar="MODEL")
    leaf.add_argument("--version", metavar="V")
    leaf.set_defaults(action="capture_show")

    samples = actions.add_parser("samples", help="captured samples: list, get, label, export")
    sub = samples.add_subparsers(dest="samples_command", metavar="ACTION", required=True)
    leaf = sub.add_parser("list", parents=[common], help="samples, newest first")
    leaf.add_argument("--model", metavar="NAME")
    leaf.add_argument("--version", metavar="V")
    leaf.add_argument("--device", metavar="ID")
    leaf.add_argument("--reason", choices=REASONS)
    leaf.add_argument("--unlabelled", action="store_true", help="only samples without a label")
    leaf.add_argument("--limit", type=_count, default=100, metavar="N", help="rows, 1..1000")
    leaf.set_defaults(action="samples_list")
    leaf = sub.add_parser("get", parents=[common], help="download a sample's content")
    leaf.add_argument("sample_id", metavar="ID", type=_count)
    leaf.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    leaf.set_defaults(action="samples_get")
    leaf = sub.add_parser("label", parents=[common], help="set a sample's class label")
    leaf.add_argument("sample_id", metavar="ID", type=_count)
    leaf.add_argument("label", metavar="LABEL")
    leaf.set_defaults(action="samples_label")
    leaf = sub.add_parser("import", parents=[common], help="labels from a Label Studio JSON export")
    leaf.add_argument("file", metavar="FILE", type=Path)
    leaf.set_defaults(action="samples_import")
    leaf = sub.add_parser(
        "export",
        parents=[common],
        help="a dataset snapshot of MODEL's labelled samples (prints its dataset_sha256)",
    )
    leaf.add_argument("name", metavar="MODEL")
    leaf.add_argument("-o", "--output", type=Path, required=True, metavar="DIR")
    leaf.add_argument("--format", choices=FORMATS, default="imagefolder")
    leaf.add_argument("--version", metavar="V")
    leaf.add_argument("--device", metavar="ID")
    leaf.add_argument("--reason", choices=REASONS)
    leaf.set_defaults(action="samples_export")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from err
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value
