"""The one error type of the SSH runner: its message is the one line the user sees."""

from __future__ import annotations


class HilError(Exception):
    """A step of ``edgefleet hil run`` failed (the message names the step and the cause)."""
