"""Reading the user's side files (preprocessing, labels, keys) and option strings safely.

Standard library and the contract only, so the CLI can use it without the extras. Every reader
checks the size before reading and turns any problem into one :class:`InputError` line.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from converters.errors import InputError, one_line
from converters.options import MAX_DIM, MAX_LABEL_CHARS, MAX_LABELS
from edgefleet.artifact import hash_file
from edgefleet.contract import ContractError, Preprocessing, TensorSpec
from edgefleet.contract.manifest import MAX_FILE_BYTES
from edgefleet.contract.parsing import load_json_object, validate

MAX_PREPROCESSING_BYTES = 64 * 1024
MAX_LABELS_BYTES = 4 * 1024 * 1024
MAX_KEY_BYTES = 16 * 1024

_SHAPE = re.compile(r"^([^=\s]{1,256})=(\d{1,8}(?:,\d{1,8}){0,7})$")


def read_limited(path: Path, *, what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, or one InputError line."""
    try:
        if not path.is_file():
            raise InputError(f"{what} {path}: no such file")
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"{what} {path.name} is {size} bytes; the limit is {max_bytes}")
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"{what} {path}: cannot read: {one_line(err)}") from err


def check_source(path: Path) -> int:
    """The size of the source model file, which must exist and fit the contract's limit."""
    try:
        if not path.exists():
            raise InputError(f"source {path}: no such file")
        if not path.is_file():
            raise InputError(f"source {path}: not a regular file")
        size = path.stat().st_size
    except OSError as err:
        raise InputError(f"source {path}: cannot read: {one_line(err)}") from err
    if size == 0:
        raise InputError(f"source {path.name} is empty")
    if size > MAX_FILE_BYTES:
        raise InputError(f"source {path.name} is {size} bytes; the limit is {MAX_FILE_BYTES}")
    return size


def read_preprocessing(path: Path) -> Preprocessing:
    """A contract :class:`Preprocessing` object from a JSON file."""
    raw = read_limited(path, what="preprocessing", max_bytes=MAX_PREPROCESSING_BYTES)
    try:
        data = load_json_object(raw, what="preprocessing", max_bytes=MAX_PREPROCESSING_BYTES)
        return validate(Preprocessing, data, what="preprocessing")
    except ContractError as err:
        raise InputError(f"{path.name}: {one_line(err)}") from err


def read_labels(path: Path) -> list[str]:
    """Class names, one per line (UTF-8; trailing blank lines ignored)."""
    raw = read_limited(path, what="labels", max_bytes=MAX_LABELS_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"labels {path.name} is not UTF-8 text") from err
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputError(f"labels {path.name} is empty")
    if len(lines) > MAX_LABELS:
        raise InputError(f"labels {path.name} has {len(lines)} lines; the limit is {MAX_LABELS}")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise InputError(f"labels {path.name}: line {number} is blank")
        if len(line) > MAX_LABEL_CHARS or "\x00" in line:
            raise InputError(
                f"labels {path.name}: line {number} is longer than {MAX_LABEL_CHARS} characters "
                "or holds a NUL"
            )
    if len(set(lines)) != len(lines):
        raise InputError(f"labels {path.name}: labels must be unique")
    return lines


def parse_input_shape(text: str) -> tuple[str, list[int]]:
    """``NAME=1,64`` → ``("NAME", [1, 64])``."""
    match = _SHAPE.fullmatch(text.strip())
    if match is None:
        raise InputError(
            f"--input-shape {text[:80]!r}: expected NAME=D1,D2,... with 1-8 positive integers"
        )
    dims = [int(d) for d in match.group(2).split(",")]
    if any(not 1 <= d <= MAX_DIM for d in dims):
        raise InputError(f"--input-shape {text[:80]!r}: each dimension must be 1..{MAX_DIM}")
    return match.group(1), dims


def read_sign_key(path: Path) -> bytes:
    """A PEM private key file's bytes (parsed and checked by :mod:`edgefleet.signing`)."""
    return read_limited(path, what="signing key", max_bytes=MAX_KEY_BYTES)


def check_preprocessing(pre: Preprocessing, spec: TensorSpec) -> None:
    """The tensor the preprocessing makes must fit the model's first input (where both say).

    Only a fixed resize pins the image size; dynamic model dimensions accept anything.
    """
    if pre.resize is None:
        return
    channels = 1 if pre.color == "gray" else 3
    height, width = pre.resize.height, pre.resize.width
    if pre.layout == "flat":
        expected: list[int] = [channels * height * width]
        actual = spec.shape[1:]
    elif pre.layout == "nchw":
        expected, actual = [channels, height, width], spec.shape[1:]
    else:
        expected, actual = [height, width, channels], spec.shape[1:]
    if len(actual) != len(expected):
        raise InputError(
            f"preprocessing ({pre.layout}) makes {len(expected) + 1}-D tensors but input "
            f"{spec.name!r} is {spec.shape}"
        )
    for got, want in zip(actual, expected, strict=True):
        if isinstance(got, int) and got != want:
            raise InputError(
                f"preprocessing makes [batch, {', '.join(map(str, expected))}] "
                f"({pre.color}, {width}x{height}, {pre.layout}) but input {spec.name!r} "
                f"is {spec.shape}"
            )


def source_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file, or of a directory's files (relative paths and bytes)."""
    if path.is_file():
        return hash_file(path)
    digest, size = hashlib.sha256(), 0
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(item.relative_to(path).as_posix().encode() + b"\x00")
        data = item.read_bytes()
        size += len(data)
        digest.update(data + b"\x00")
    return digest.hexdigest(), size
