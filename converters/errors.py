"""The converter's errors: one line each, with the exit code the CLI uses."""

from __future__ import annotations


class ConvertError(Exception):
    """A conversion that could not be completed (conversion failure, broken fidelity).

    The message is one line that says what went wrong; the CLI prints it and exits 1.
    """

    exit_code = 1


class InputError(ConvertError):
    """Bad input from the user: a missing or malformed file, a bad option, an existing OUT_DIR.

    The CLI prints the message and exits 2.
    """

    exit_code = 2


def one_line(err: BaseException, *, limit: int = 300) -> str:
    """A third-party exception as one short line (type name when it has no message)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
