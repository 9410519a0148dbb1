"""Argument types the ``edgefleet fleet`` parsers share (one owner for each check)."""

from __future__ import annotations

import argparse


def share(text: str) -> float:
    """A fraction in [0, 1] (a sample rate, an agreement, a threshold on a score)."""
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from err
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value
