"""The parser of ``edgefleet fleet quality`` (no httpx, no rich: ``--help`` needs neither)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(actions: Any, common: argparse.ArgumentParser) -> None:
    leaf = actions.add_parser(
        "quality",
        parents=[common],
        help="accuracy / per-class scores / mAP of a model version from labelled samples",
    )
    leaf.add_argument("name", metavar="MODEL")
    leaf.add_argument("version", metavar="VERSION")
    leaf.set_defaults(action="quality")
