"""The one conversion pipeline: load → normalise → validate → candidates → budget loop →
latency gate → measure → assemble → sign → write, for every source and format.

The pipeline owns the order and what every format shares; a format
(:mod:`converters.formats`) owns what differs. Raises :class:`InputError` for bad input (CLI
exit 2) and :class:`ConvertError` when the model cannot be converted or the converted model
does not behave like the source (exit 1).
"""

from __future__ import annotations

import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from converters import quiet
from converters.assemble import SELFTEST_FILE, build_manifest, build_report
from converters.errors import ConvertError, InputError, one_line
from converters.formats import route
from converters.inputs import check_source, read_sign_key
from converters.options import ConvertOptions
from converters.report import REPORT_FILE, ConvertResult
from converters.validators import run_validators
from converters.writer import check_out_dir, write_artifact
from edgefleet.contract import Manifest


def default_name(source: Path) -> str:
    """The source file's stem as a valid model name ('My Model.pkl' → 'my-model')."""
    name = re.sub(r"[^a-z0-9._-]+", "-", source.stem.lower())
    name = re.sub(r"^[^a-z0-9]+", "", name)[:63]
    return name or "model"


def check_key(options: ConvertOptions) -> bytes | None:
    """The --sign-key PEM, read and parsed before any work (None when unsigned)."""
    if options.sign_key is None:
        return None
    from edgefleet.signing import SignatureError, load_private_key

    pem = read_sign_key(options.sign_key)
    try:
        load_private_key(pem)
    except SignatureError as err:
        raise InputError(f"--sign-key {options.sign_key.name}: {one_line(err)}") from err
    return pem


def sign(manifest: Manifest, key_pem: bytes | None) -> Manifest:
    if key_pem is None:
        return manifest
    from edgefleet.signing import sign_manifest

    return sign_manifest(manifest, key_pem)


def convert(source: Path, out_dir: Path, options: ConvertOptions) -> ConvertResult:
    """Convert ``source`` into an artifact directory at ``out_dir``.

    Nothing is left at ``out_dir`` (or beside it) when it raises; with ``force`` a previous
    artifact there is replaced only once the new one is complete and verified.
    """
    started = time.perf_counter()
    fmt, kind = route(source, options)
    for module in fmt.modules(kind):
        quiet.import_module(module)  # ModuleNotFoundError: the CLI names the extra
    if not source.is_dir():  # a SavedModel directory is read by its loader
        check_source(source)
    check_out_dir(out_dir, force=options.force)
    key_pem = check_key(options)
    if options.quantize_mode != "none" and options.calibration is None:
        raise InputError(f"--quantize {options.quantize_mode} needs --calibration DATA")

    with tempfile.TemporaryDirectory(prefix="edgefleet-convert-") as work:
        run = fmt.load(source, kind=kind, options=options, work=Path(work))  # load, normalise
        timings = {"load_s": time.perf_counter() - started}

        mark = time.perf_counter()
        checks = run_validators(run.validation())
        failed = [c for c in checks if not c.passed]
        if failed:
            raise ConvertError(failed[0].message)
        timings["validate_s"] = time.perf_counter() - mark

        if options.quantize_mode != "none":  # candidates → budget loop → latency gate
            mark = time.perf_counter()
            check = run.quantize()
            if check is not None:
                checks.append(check)
            timings["quantize_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        run.measure()
        timings["latency_s"] = time.perf_counter() - mark

        art = run.assemble(
            name=options.name or default_name(source),
            version=options.version or datetime.now(UTC).strftime("%Y%m%d.%H%M%S"),
            checks=checks,
        )
        report = build_report(art, timings={**timings, "total_s": time.perf_counter() - started})
        manifest = write_artifact(
            out_dir,
            files=[
                (art.model_file, art.model, "model"),
                (SELFTEST_FILE, art.selftest, "selftest"),
                (REPORT_FILE, report.to_json().encode(), "extra"),
            ],
            make_manifest=lambda files: sign(build_manifest(art, files), key_pem),
            force=options.force,
        )
    return ConvertResult(manifest=manifest, artifact_dir=out_dir, report=report)
