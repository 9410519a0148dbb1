"""``edgefleet convert``: the converter's command line (standard library only at import).

Parsing happens in :func:`options_from_args`, the work in :func:`handle`, which returns the exit
code: 0 on success, 2 for bad input or usage, 1 when conversion or validation fails. A failure is
one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from converters.options import ConvertOptions

DESCRIPTION = (
    "Convert a trained model (scikit-learn .pkl/.joblib, PyTorch .pt/.pth, .onnx, Keras .keras "
    "or SavedModel, .tflite) into a validated, optionally quantized ONNX or TFLite artifact "
    "with a manifest, a self-test and a report. "
    "Pickles run code when loaded: only convert pickles you trust. "
    "'edgefleet convert keygen -o DIR' writes an Ed25519 signing key pair."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", type=Path, metavar="SOURCE", help="Model file (or SavedModel directory)."
    )
    parser.add_argument(
        "-o",
        "--out",
        dest="out_dir",
        type=Path,
        required=True,
        metavar="OUT_DIR",
        help="Artifact directory to create (must not exist unless --force).",
    )
    parser.add_argument("--name", help="Model name (default: the source file's stem).")
    parser.add_argument("--version", help="Model version (default: the UTC time).")
    parser.add_argument(
        "--preprocessing",
        type=Path,
        metavar="FILE.json",
        help="JSON Preprocessing object (image → tensor) copied into the manifest.",
    )
    parser.add_argument("--labels", type=Path, metavar="FILE", help="Class names, one per line.")
    parser.add_argument(
        "--task",
        choices=["classification", "detection", "segmentation", "regression", "raw"],
        help="What the outputs mean (default: from the model, or recognised from its outputs).",
    )
    parser.add_argument(
        "--postprocess",
        choices=["yolov8", "yolov5", "yolox", "gfl", "picodet", "ssd", "ssd-anchors", "mask"],
        help="Output layout of a detector/segmenter, recorded in the manifest so the agent "
        "needs no config (default: recognised from the output shapes where possible).",
    )
    parser.add_argument(
        "--score-threshold", type=float, metavar="S", help="Detector: minimum box score."
    )
    parser.add_argument(
        "--iou-threshold", type=float, metavar="IOU", help="Detector: NMS overlap limit."
    )
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D1,D2,...",
        help="Concrete shape of an input (repeatable), e.g. input=1,64.",
    )
    parser.add_argument(
        "--keep-dynamic",
        action="store_true",
        help="Keep dynamic input dimensions in the graph (default: fix all but the batch from "
        "--input-shape or the calibration/eval data's rows).",
    )
    parser.add_argument(
        "--eval",
        dest="eval_data",
        type=Path,
        metavar="DATA.npz",
        help="Eval data: arrays x (or x/<input>) and optional labels y.",
    )
    parser.add_argument(
        "--sign-key", type=Path, metavar="PEM", help="Ed25519 private key to sign the manifest."
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="DATA",
        help="Calibration data: .npz (x, optional y) or an image folder (one sub-folder per "
        "class gives labels; needs --preprocessing).",
    )
    parser.add_argument(
        "--quantize",
        choices=["auto", "int8", "fp16", "none"],
        help="auto (default with --calibration): fastest candidate within --max-drop, else "
        "fp32; int8/fp16: that precision or fail; none (default without): fp32.",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=0.01,
        metavar="X",
        help="Largest metric drop vs fp32 (top-1 with labels, else argmax agreement/cosine).",
    )
    parser.add_argument(
        "--target",
        metavar="PROFILE",
        help="Device profile (built-in name or .toml) the candidates are chosen for "
        "(default: this host).",
    )
    parser.add_argument(
        "--calibration-method",
        action="append",
        choices=["minmax", "entropy", "percentile"],
        metavar="METHOD",
        help="Range estimator to try (repeatable; default minmax, entropy and percentile).",
    )
    parser.add_argument(
        "--format",
        choices=["onnx", "tflite", "all"],
        help="Artifact format (default: tflite for .keras/.h5/.tflite/SavedModel sources, onnx "
        "otherwise). onnx from Keras/SavedModel uses tf2onnx; tflite from .onnx uses onnx2tf "
        "(its own tool venv); all writes OUT_DIR/onnx and OUT_DIR/tflite.",
    )
    parser.add_argument(
        "--min-speedup",
        type=float,
        default=1.0,
        metavar="X",
        help="Latency gate: a candidate must be at least X times faster than fp32 (default 1: "
        "strictly faster).",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="Load a pickled torch nn.Module (runs code from the file: only your own files).",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="Stop searching quantization candidates after this long and keep the best so far "
        "(default: no limit).",
    )
    parser.add_argument(
        "--no-latency-probe",
        action="store_true",
        help="Validate every quantization candidate, even those a short latency probe shows "
        "not faster than fp32 on this host (slower; for studying their accuracy).",
    )
    parser.add_argument("--quiet", action="store_true", help="No progress lines on stderr.")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Per-node lines too (each step of the accuracy-budget loop).",
    )
    parser.add_argument(
        "--json", action="store_true", help="Print the manifest and report as JSON."
    )
    parser.add_argument(
        "--force", action="store_true", help="Replace an existing artifact at OUT_DIR."
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "convert", help="Convert a model into a validated artifact.", description=DESCRIPTION
    )
    add_arguments(parser)
    parser.set_defaults(handler=handle)


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser (``python -m converters``), the same arguments as the subcommand."""
    parser = argparse.ArgumentParser(prog="edgefleet convert", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(handler=handle, command="convert")
    return parser


def options_from_args(args: argparse.Namespace) -> tuple[Path, Path, ConvertOptions]:
    """Turn parsed arguments into ``convert``'s inputs; InputError (one line) if they are bad."""
    from pydantic import ValidationError

    from converters.errors import InputError
    from converters.inputs import parse_input_shape, read_labels, read_preprocessing
    from converters.options import ConvertOptions
    from edgefleet.pydantic_errors import describe_validation_error

    shapes: dict[str, list[int]] = {}
    for text in args.input_shape:
        name, dims = parse_input_shape(text)
        if name in shapes:
            raise InputError(f"--input-shape {name} is given twice")
        shapes[name] = dims
    try:
        options = ConvertOptions(
            name=args.name,
            version=args.version,
            task=args.task,
            postprocess=args.postprocess,
            score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold,
            preprocessing=read_preprocessing(args.preprocessing) if args.preprocessing else None,
            labels=read_labels(args.labels) if args.labels else None,
            input_shapes=shapes,
            eval_data=args.eval_data,
            keep_dynamic=args.keep_dynamic,
            sign_key=args.sign_key,
            force=args.force,
            calibration=args.calibration,
            quantize=args.quantize,
            max_drop=args.max_drop,
            target=args.target,
            trust_pickle=args.trust_pickle,
            min_speedup=args.min_speedup,
            format=args.format,
            progress=not args.quiet,
            verbose=args.verbose and not args.quiet,
            time_budget_s=args.time_budget,
            latency_probe=not args.no_latency_probe,
            **({"calibration_methods": args.calibration_method} if args.calibration_method else {}),
        )
    except ValidationError as err:
        raise InputError(f"bad option: {describe_validation_error(err)}") from err
    return args.source, args.out_dir, options


#: ``edgefleet convert keygen -o DIR``: SOURCE ``keygen`` (when no such file exists).
KEYGEN = "keygen"


def keygen(out_dir: Path, *, as_json: bool, force: bool) -> int:
    """Write an Ed25519 pair (``signing.pem``, ``signing.pub.pem``) into ``out_dir``."""
    from edgefleet.signing import generate_keypair

    private, public = out_dir / "signing.pem", out_dir / "signing.pub.pem"
    if (private.exists() or public.exists()) and not force:
        print(
            f"edgefleet convert: error: {private} or {public} exists; pass --force to replace",
            file=sys.stderr,
        )
        return 2
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # Generated beside the destination, then renamed: a replaced pair is never half-written.
        with tempfile.TemporaryDirectory(prefix=".keygen-", dir=out_dir) as tmp:
            key_id = generate_keypair(Path(tmp) / private.name, Path(tmp) / public.name)
            os.replace(Path(tmp) / public.name, public)
            os.replace(Path(tmp) / private.name, private)
    except OSError as err:
        print(f"edgefleet convert: error: cannot write keys: {err}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps({"key_id": key_id, "private": str(private), "public": str(public)}))
    else:
        print(f"key {key_id}: private {private} (keep secret), public {public}")
    return 0


def handle(args: argparse.Namespace) -> int:
    """Run one conversion; print a summary (or JSON); return the exit code."""
    from converters.errors import ConvertError, one_line

    if str(args.source) == KEYGEN and not args.source.exists():
        return keygen(args.out_dir, as_json=args.json, force=args.force)
    if not args.verbose:
        from converters import quiet

        quiet.enable()
    existed = args.out_dir.exists()
    try:
        source, out_dir, options = options_from_args(args)
        from converters.api import convert
        from converters.report import summary

        if options.format == "all":
            # One artifact per format, OUT_DIR/onnx and OUT_DIR/tflite; both or neither.
            results = []
            for fmt in ("onnx", "tflite"):
                one = options.model_copy(update={"format": fmt})
                results.append(convert(source, out_dir / fmt, one))
        else:
            results = [convert(source, out_dir, options)]
    except ConvertError as err:
        print(f"edgefleet convert: error: {one_line(err, limit=500)}", file=sys.stderr)
        if options_format(args) == "all" and not existed:
            _remove_partial(args.out_dir)
        return err.exit_code
    if args.json:
        documents = [
            {
                "artifact_dir": str(result.artifact_dir),
                "manifest": json.loads(result.manifest.to_json()),
                "report": json.loads(result.report.to_json()),
            }
            for result in results
        ]
        print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2))
    else:
        print("\n".join(summary(result) for result in results))
    return 0


def options_format(args: argparse.Namespace) -> str | None:
    return getattr(args, "format", None)


def _remove_partial(out_dir: Path) -> None:
    """--format all failed part way: the first format's artifact goes too (both or neither)."""
    import shutil

    for fmt in ("onnx", "tflite"):
        shutil.rmtree(out_dir / fmt, ignore_errors=True)
    try:
        out_dir.rmdir()
    except OSError:
        pass
