"""The compare engine's one error: a bad data source, an artifact that does not load or run,
two versions that cannot be compared. One printable line each."""

from __future__ import annotations


class CompareError(Exception):
    """Why the comparison could not be made (the CLI prints it and exits 1)."""
