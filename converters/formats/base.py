"""The per-format Protocol of the one conversion pipeline (:mod:`converters.pipeline`).

The pipeline owns the order — load → normalise → validate → candidates/budget loop/latency gate →
measure → assemble → sign — and everything every format shares (preflight checks, the validators,
timings, the report and manifest, signing, the atomic write). A format owns only what differs:
how a source becomes a model it can run, how candidates are made and chosen, how the shipped
model is timed and self-tested. One module with an :class:`ArtifactFormat` and one line in
:data:`converters.formats.FORMATS` adds a format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from converters.assemble import Artifact
from converters.options import ConvertOptions
from converters.validators import CheckResult, ValidationContext


class FormatRun(Protocol):
    """One conversion in progress, after load and normalise; the pipeline calls each step once,
    in this order."""

    def validation(self) -> ValidationContext:
        """The rows, the format's outputs on them and the source's own: what the validators
        compare (the pipeline runs them and stops on the first failure)."""
        ...

    def quantize(self) -> CheckResult | None:
        """Candidates → accuracy-budget loop → latency gate; the chosen model becomes the one
        shipped. Called only when ``--quantize`` is not ``none``. Returns a check for the report
        when the format records one."""
        ...

    def measure(self) -> None:
        """Time the shipped model (one deployment batch, one thread) and build its self-test."""
        ...

    def assemble(self, *, name: str, version: str, checks: list[CheckResult]) -> Artifact:
        """The finished artifact's record (model and self-test bytes, numbers, specs)."""
        ...


class ArtifactFormat(Protocol):
    """One artifact format (``manifest.format``): how any source kind it accepts becomes it."""

    #: Registry key and ``--format`` value, e.g. 'onnx'.
    key: str

    def modules(self, kind: str) -> tuple[str, ...]:
        """Top-level modules a conversion of source ``kind`` imports, checked before any input is
        read (ModuleNotFoundError → the CLI names the extra)."""
        ...

    def load(self, source: Path, *, kind: str, options: ConvertOptions, work: Path) -> FormatRun:
        """Load and normalise ``source`` (fixed shapes, task, labels). ``work`` is a scratch
        directory that lives until the artifact is written."""
        ...
