"""The one error type of the network-fault harness."""

from __future__ import annotations


class NetFaultError(Exception):
    """A namespace, link or fault could not be set up (message: the command and its error)."""
