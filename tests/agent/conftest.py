"""Agent fixtures: one digits artifact per session, copied per test when a test edits it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.utils.artifacts import build_digits_artifact


@pytest.fixture(scope="session")
def digits_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_digits_artifact(tmp_path_factory.mktemp("v1") / "digits-1.0.0", version="1.0.0")


@pytest.fixture(scope="session")
def digits_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_digits_artifact(
        tmp_path_factory.mktemp("v2") / "digits-2.0.0", version="2.0.0", seed=1
    )


@pytest.fixture
def artifact_copy(digits_v1: Path, tmp_path: Path) -> Path:
    """A private copy of the v1 artifact that the test may edit."""
    return Path(shutil.copytree(digits_v1, tmp_path / "artifact"))
