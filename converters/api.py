"""``convert``: one trained model file → one verified (and optionally signed) ONNX artifact.

load → ONNX → validate (fidelity against the source framework, top-1) → latency → self-test,
reference stats, report → manifest (validated by the contract, signed) → written atomically.
"""

from __future__ import annotations

import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from converters import quiet
from converters.assemble import (
    MODEL_FILE,
    SELFTEST_FILE,
    Conversion,
    build_manifest,
    build_report,
)
from converters.calibration import peek_row_shape
from converters.errors import ConvertError, InputError, one_line
from converters.evaldata import (
    EvalSet,
    batch_of,
    check_overrides,
    deploy_batch,
    load_eval,
    synthetic_inputs,
)
from converters.inputs import check_preprocessing, check_source, read_sign_key, source_sha256
from converters.onnx_graph import check_opset, name_dynamic_dims, tensor_specs
from converters.options import ConvertOptions, ConvertTask
from converters.quantize.stage import (
    QuantStage,
    calibration_stats,
    progress_printer,
    quantize_stage,
)
from converters.report import REPORT_FILE, ConvertResult
from converters.runtime import Latency, make_session, measure_latency, run_batched
from converters.selftest import build_selftest
from converters.shapes import data_row_shapes, specialise
from converters.sources import LoadedModel, loader_for
from converters.sources.keras_source import KerasLoader
from converters.stats import class_index, reference_stats
from converters.tasks import decide_task
from converters.validators import ValidationContext, run_validators
from converters.writer import check_out_dir, write_artifact
from edgefleet import __version__
from edgefleet.artifact import hash_file
from edgefleet.contract import Manifest, ModelFile, TensorSpec

__all__ = ["ConvertOptions", "ConvertResult", "convert"]

#: Modules every conversion needs, imported first so a missing extra is reported before input.
REQUIRED_MODULES = ("numpy", "onnx", "onnxruntime")


#: Sources that become TFLite artifacts by default (suffix → kind); everything else goes through
#: ONNX. ``--format onnx`` takes a Keras model or SavedModel through tf2onnx instead.
TFLITE_SOURCES = {".keras": "keras", ".h5": "keras", ".tflite": "tflite"}
KERAS = KerasLoader()
#: Sources another tool turns into TFLite (suffix → kind): onnx2tf, litert-torch.
TO_TFLITE = {".onnx": "onnx", ".pt": "pytorch", ".pth": "pytorch", ".pt2": "pytorch"}


def check_format(source: Path, tflite_kind: str | None, options: ConvertOptions) -> None:
    """--format must be one the tool chain can make from this source (``all`` is the CLI's:
    it runs one conversion per format)."""
    wanted = options.format
    if wanted is None or wanted == "all":
        return
    if tflite_kind == "tflite" and wanted != "tflite":
        raise InputError(
            f"--format {wanted}: {source.name} is a TFLite model already; pass --format tflite"
        )
    if tflite_kind is None and wanted == "tflite" and source.suffix.lower() not in TO_TFLITE:
        raise InputError(
            f"--format tflite: {source.name} converts to ONNX only (convert it to .onnx first, "
            "then ONNX → TFLite goes through onnx2tf); pass --format onnx"
        )


def _convert_tflite(
    source: Path, out_dir: Path, options: ConvertOptions, *, kind: str
) -> ConvertResult:
    quiet.import_module("ai_edge_litert")  # ModuleNotFoundError: the CLI names the extra
    if kind in ("keras", "savedmodel"):
        quiet.import_module("tensorflow")
    if kind != "savedmodel":
        check_source(source)
    check_out_dir(out_dir, force=options.force)
    key_pem = _check_key(options)
    if options.quantize_mode != "none" and options.calibration is None:
        raise InputError(f"--quantize {options.quantize_mode} needs --calibration DATA")
    from converters.tflite.convert import convert_tflite

    if kind == "pytorch":
        from converters.tflite.from_torch import torch_to_tflite

        if not options.input_shapes and options.calibration:
            row = peek_row_shape(options.calibration, preprocessing=options.preprocessing)
            options = options.model_copy(update={"input_shapes": {"input": [1, *row]}})
        progress_printer(options.progress)("PyTorch → TFLite with litert-torch")
        built = torch_to_tflite(source, options=options)
        return convert_tflite(source, out_dir, options, kind=kind, key_pem=key_pem, prebuilt=built)
    if kind != "onnx":
        return convert_tflite(source, out_dir, options, kind=kind, key_pem=key_pem)
    from converters.tflite.from_onnx import nhwc_copy, onnx_to_tflite

    progress_printer(options.progress)("ONNX → TFLite with onnx2tf")
    converted = onnx_to_tflite(source, input_shapes=_onnx_input_shapes(source, options))
    with tempfile.TemporaryDirectory(prefix="edgefleet-nhwc-") as work:
        if converted.nhwc:
            # onnx2tf made the image input NHWC: the data and the manifest follow it.
            update: dict[str, object] = {}
            for key in ("calibration", "eval_data"):
                data = getattr(options, key)
                if data is not None and data.suffix.lower() == ".npz":
                    update[key] = nhwc_copy(data, Path(work))
            if options.preprocessing is not None:
                update["preprocessing"] = msgspec.structs.replace(
                    options.preprocessing, layout="nhwc"
                )
            options = options.model_copy(update=update)
        return convert_tflite(
            source, out_dir, options, kind=kind, key_pem=key_pem, prebuilt=converted
        )


def _onnx_input_shapes(source: Path, options: ConvertOptions) -> dict[str, list[int]]:
    """--input-shape, else each input's shape fixed from the calibration/eval data (batch 1)."""
    import onnx

    from converters.onnx_graph import tensor_specs

    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as err:  # protobuf and onnx raise several unrelated types
        raise InputError(f"{source.name} is not a readable ONNX model: {one_line(err)}") from err
    inputs, _ = tensor_specs(model)
    rows, _where = data_row_shapes(
        inputs,
        calibration=options.calibration,
        eval_data=options.eval_data,
        preprocessing=options.preprocessing,
    )
    shapes = {name: [1, *row] for name, row in rows.items()}
    return {**shapes, **options.input_shapes}


def default_name(source: Path) -> str:
    """The source file's stem as a valid model name ('My Model.pkl' → 'my-model')."""
    name = re.sub(r"[^a-z0-9._-]+", "-", source.stem.lower())
    name = re.sub(r"^[^a-z0-9]+", "", name)[:63]
    return name or "model"


def _tools(loaded: LoadedModel) -> dict[str, str]:
    import numpy as np
    import onnx
    import onnxruntime

    return {
        "edgefleet": __version__,
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        **loaded.tools,
    }


def _check_key(options: ConvertOptions) -> bytes | None:
    if options.sign_key is None:
        return None
    from edgefleet.signing import SignatureError, load_private_key

    pem = read_sign_key(options.sign_key)
    try:
        load_private_key(pem)
    except SignatureError as err:
        raise InputError(f"--sign-key {options.sign_key.name}: {one_line(err)}") from err
    return pem


def _reference(loaded: LoadedModel, feeds: dict[str, Any]) -> dict[str, Any]:
    try:
        return loaded.reference(feeds)
    except ConvertError:
        raise
    except Exception as err:  # the source framework's predict can raise anything
        raise ConvertError(
            f"the source {loaded.framework} model failed to predict: {one_line(err)}"
        ) from err


def _task(options: ConvertOptions, loaded: LoadedModel) -> ConvertTask:
    task = options.task or loaded.task
    if options.labels is not None and options.task is None and task == "raw":
        task = "classification"
    if options.labels is not None and task in ("regression", "raw"):
        raise InputError(f"--labels needs a classifier, detector or segmenter; this is {task}")
    return task


def _score_width(outputs: list[TensorSpec]) -> int | None:
    for spec in outputs:
        if spec.dtype.startswith("float") and len(spec.shape) == 2:
            width = spec.shape[1]
            if isinstance(width, int) and width > 1:
                return width
    return None


def _labels(options: ConvertOptions, loaded: LoadedModel, outputs: list[TensorSpec]) -> list[str]:
    labels = options.labels if options.labels is not None else loaded.labels
    width = _score_width(outputs)
    if labels and width is not None and len(labels) != width:
        raise InputError(f"{len(labels)} labels given but the model scores [{width}] classes")
    return labels


def _feeds(
    options: ConvertOptions, inputs: list[TensorSpec]
) -> tuple[dict[str, Any], EvalSet | None, str | None]:
    """The rows to validate on: the eval set, or deterministic synthetic rows."""
    if options.eval_data is None:
        rows = synthetic_inputs(inputs, options.input_shapes, rows=options.synthetic_samples)
        return rows, None, None
    eval_set = load_eval(options.eval_data, inputs=inputs, max_bytes=options.max_eval_bytes)
    batch = batch_of(inputs)
    if batch is not None and eval_set.samples % batch:
        raise InputError(
            f"eval data has {eval_set.samples} rows, not a multiple of the model's fixed batch "
            f"{batch}"
        )
    return eval_set.inputs, eval_set, hash_file(options.eval_data)[0]


def _latency(
    session: Any, feeds: dict[str, Any], inputs: list[TensorSpec], options: ConvertOptions
) -> Latency:
    """One deployment-sized batch (usually one row), one thread, after a warm-up."""
    batch = deploy_batch(inputs[0], options.input_shapes)
    rows = len(next(iter(feeds.values())))
    sample = (
        {k: v[:batch] for k, v in feeds.items()}
        if rows >= batch
        else synthetic_inputs(inputs, options.input_shapes, rows=batch)
    )
    return measure_latency(
        session, sample, warmup=options.latency_warmup, runs=options.latency_runs
    )


def _specialise(
    model: Any, inputs: list[TensorSpec], outputs: list[TensorSpec], options: ConvertOptions
) -> tuple[Any, list[TensorSpec], list[TensorSpec], ConvertOptions, list[str]]:
    """Fix dynamic input dims from --input-shape / the data (see :mod:`converters.shapes`);
    with --keep-dynamic only give the data's shapes to the synthetic and latency runs."""
    rows, where = data_row_shapes(
        inputs,
        calibration=options.calibration,
        eval_data=options.eval_data,
        preprocessing=options.preprocessing,
    )
    if options.keep_dynamic:
        shapes = dict(options.input_shapes)
        for spec in inputs:
            row = rows.get(spec.name)
            if spec.name not in shapes and row is not None and len(row) == len(spec.shape) - 1:
                first = spec.shape[0]
                shapes[spec.name] = [first if isinstance(first, int) else 1, *row]
        return model, inputs, outputs, options.model_copy(update={"input_shapes": shapes}), []
    done = specialise(model, inputs=inputs, overrides=options.input_shapes, rows=rows, source=where)
    note = done.note()
    if note is None:
        return model, inputs, outputs, options, []
    inputs, outputs = tensor_specs(model)
    return model, inputs, outputs, options, [note]


def convert(source: Path, out_dir: Path, options: ConvertOptions) -> ConvertResult:
    """Convert ``source`` into an artifact directory at ``out_dir``.

    Raises :class:`InputError` for bad input (CLI exit 2) and :class:`ConvertError` when the
    model cannot be converted or the converted model does not behave like the source (exit 1).
    Nothing is left at ``out_dir`` (or beside it) when it raises; with ``force`` a previous
    artifact there is replaced only once the new one is complete and verified.
    """
    started = time.perf_counter()
    tflite_kind = TFLITE_SOURCES.get(source.suffix.lower())
    if source.is_dir() and (source / "saved_model.pb").is_file():
        tflite_kind = "savedmodel"
    check_format(source, tflite_kind, options)
    if tflite_kind is not None and options.format != "onnx":
        return _convert_tflite(source, out_dir, options, kind=tflite_kind)
    if tflite_kind is None and options.format == "tflite":
        return _convert_tflite(source, out_dir, options, kind=TO_TFLITE[source.suffix.lower()])
    loader = KERAS if tflite_kind is not None else loader_for(source)
    for module in (*REQUIRED_MODULES, *loader.modules):
        quiet.import_module(module)  # ModuleNotFoundError: the CLI names the extra
    source_size = source_sha256(source)[1] if source.is_dir() else check_source(source)
    check_out_dir(out_dir, force=options.force)
    key_pem = _check_key(options)
    if options.quantize_mode != "none" and options.calibration is None:
        raise InputError(f"--quantize {options.quantize_mode} needs --calibration DATA")

    import onnx

    if loader.kind == "pytorch" and not options.input_shapes and options.calibration:
        # A PyTorch module declares no input shape: one calibration row, batch 1, gives it.
        row = peek_row_shape(options.calibration, preprocessing=options.preprocessing)
        options = options.model_copy(update={"input_shapes": {"input": [1, *row]}})
    loaded = loader.load(source, options=options)
    model = loaded.onnx_model
    name_dynamic_dims(model)
    check_opset(model)
    inputs, outputs = tensor_specs(model)
    model, inputs, outputs, options, notes = _specialise(model, inputs, outputs, options)
    check_overrides(inputs, options.input_shapes)
    if options.preprocessing is not None:
        check_preprocessing(options.preprocessing, inputs[0])
    task = _task(options, loaded)
    task, post, decode = decide_task(options, task, inputs, outputs, notes)
    labels = _labels(options, loaded, outputs) if post is None else list(options.labels or [])
    model_bytes = model.SerializeToString()
    timings = {"load_s": time.perf_counter() - started}

    mark = time.perf_counter()
    feeds, eval_set, eval_sha = _feeds(options, inputs)
    batch = batch_of(inputs)
    session = make_session(model_bytes)
    onnx_out = run_batched(session, feeds, batch=batch)
    checks = run_validators(
        ValidationContext(
            inputs=feeds,
            onnx_outputs=onnx_out,
            reference_outputs=_reference(loaded, feeds),
            output_specs=outputs,
            labels=eval_set.labels if eval_set is not None else None,
            class_values=loaded.class_values,
            task=task,
            synthetic=eval_set is None,
            options=options,
        )
    )
    failed = [c for c in checks if not c.passed]
    if failed:
        raise ConvertError(failed[0].message)
    timings["validate_s"] = time.perf_counter() - mark

    quant: QuantStage | None = None
    if options.quantize_mode != "none":
        mark = time.perf_counter()
        quant = quantize_stage(
            model=model,
            session=session,
            inputs=inputs,
            feeds=feeds,
            onnx_out=onnx_out,
            eval_set=eval_set,
            labels=labels if post is None else [],  # class names of boxes/masks: not eval labels
            class_values=loaded.class_values,
            task=task,
            options=options,
            decode=decode,
        )
        checks.append(quant.check())
        chosen = onnx.load_from_string(quant.outcome.model_bytes)
        name_dynamic_dims(chosen)
        model_bytes = chosen.SerializeToString()
        inputs, outputs = tensor_specs(chosen)
        feeds, onnx_out = quant.feeds, quant.outcome.outputs
        batch = batch_of(inputs)
        session = make_session(model_bytes)
        timings["quantize_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    latency = _latency(session, feeds, inputs, options)
    timings["latency_s"] = time.perf_counter() - mark
    stats = None
    if quant is not None:
        stats = calibration_stats(
            quant,
            session,
            batch=batch,
            layout=options.preprocessing.layout if options.preprocessing else None,
            n_classes=len(labels) or _score_width(outputs),
            classify=task == "classification",
        )
    elif eval_set is not None:
        stats = reference_stats(
            feeds[inputs[0].name],
            layout=options.preprocessing.layout if options.preprocessing else None,
            predicted=class_index(onnx_out) if task == "classification" else None,
            n_classes=len(labels) or _score_width(outputs),
        )
    conv = Conversion(
        source=source,
        source_kind=loader.kind,
        source_sha256=source_sha256(source)[0],
        source_size=source_size,
        loaded=loaded,
        options=options,
        name=options.name or default_name(source),
        version=options.version or datetime.now(UTC).strftime("%Y%m%d.%H%M%S"),
        task=task,
        labels=labels,
        postprocess=post,
        inputs=inputs,
        outputs=outputs,
        model_bytes=len(model_bytes),
        eval_set=eval_set,
        eval_sha256=eval_sha,
        rows=len(next(iter(feeds.values()))),
        checks=checks,
        latency=latency,
        selftest=build_selftest(
            session,
            feeds,
            onnx_out,
            count=options.selftest_samples,
            batch=batch,
            quantized=quant is not None and quant.config is not None,
        ),
        stats=stats,
        tools=_tools(loaded),
        quant=quant,
        notes=notes,
    )
    report = build_report(conv, timings={**timings, "total_s": time.perf_counter() - started})

    def make_manifest(files: list[ModelFile]) -> Manifest:
        manifest = build_manifest(conv, files)
        if key_pem is None:
            return manifest
        from edgefleet.signing import sign_manifest

        return sign_manifest(manifest, key_pem)

    manifest = write_artifact(
        out_dir,
        files=[
            (MODEL_FILE, model_bytes, "model"),
            (SELFTEST_FILE, conv.selftest.npz, "selftest"),
            (REPORT_FILE, report.to_json().encode(), "extra"),
        ],
        make_manifest=make_manifest,
        force=options.force,
    )
    return ConvertResult(manifest=manifest, artifact_dir=out_dir, report=report)
