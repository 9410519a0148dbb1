"""``convert``: one trained model file → one verified (and optionally signed) artifact.

The entry point other parts call (the CLI, the demo, the retraining pipeline through the CLI).
The work is :mod:`converters.pipeline` (one pipeline for every source and format) with the
formats in :mod:`converters.formats`.
"""

from __future__ import annotations

from converters.options import ConvertOptions
from converters.pipeline import convert, default_name
from converters.report import ConvertResult

__all__ = ["ConvertOptions", "ConvertResult", "convert", "default_name"]
