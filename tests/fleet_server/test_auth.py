"""Operator token resolution and device token hashing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fleet_server.services.auth import (
    TOKEN_FILE,
    hash_token,
    new_token,
    resolve_operator_token,
    tokens_equal,
)
from fleet_server.settings import ServerSettings


def test_generated_once_and_reused(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "data")
    first = resolve_operator_token(settings=settings)
    path = tmp_path / "data" / TOKEN_FILE
    assert path.stat().st_mode & 0o777 == 0o600 and len(first) >= 40
    assert resolve_operator_token(settings=settings) == first


def test_configured_token_wins_and_bad_file_is_refused(tmp_path: Path) -> None:
    configured = ServerSettings(data_dir=tmp_path, operator_token="c" * 32)
    assert resolve_operator_token(settings=configured) == "c" * 32
    assert not (tmp_path / TOKEN_FILE).exists()
    (tmp_path / TOKEN_FILE).write_text("short\n")
    with pytest.raises(ValueError, match="no usable token"):
        resolve_operator_token(settings=ServerSettings(data_dir=tmp_path))


def test_device_tokens() -> None:
    a, b = new_token(), new_token()
    assert a != b and len(a) >= 40
    assert hash_token(a) == hashlib.sha256(a.encode()).hexdigest()
    assert tokens_equal(a, a) and not tokens_equal(a, b)


def test_new_tokens_never_look_like_a_command_line_option() -> None:
    from fleet_server.services.auth import new_token

    tokens = [new_token() for _ in range(3000)]  # ~47 would start with '-' by chance
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == len(tokens) and all(len(t) == 43 for t in tokens)
