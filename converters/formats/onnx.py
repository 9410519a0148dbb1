"""The ONNX format: every source loader (:mod:`converters.sources`) → an onnxruntime artifact.

load (the source framework → ONNX, dynamic dims named, opset checked) → normalise (dims fixed
from the data, task and labels decided) → validate against the source framework → quantize
(:mod:`converters.quantize`: candidates, budget loop, latency gate) → latency → self-test and
reference stats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.assemble import Artifact, check_value, extra_metrics
from converters.calibration import peek_row_shape
from converters.errors import ConvertError, InputError, one_line
from converters.evaldata import (
    EvalSet,
    batch_of,
    check_overrides,
    check_rows,
    deploy_batch,
    load_eval,
    synthetic_inputs,
    take_rows,
)
from converters.inputs import check_preprocessing, source_sha256
from converters.onnx_graph import check_opset, name_dynamic_dims, tensor_specs
from converters.options import ConvertOptions, ConvertTask, config_record
from converters.quantize.configs import config_record as quant_record
from converters.quantize.configs import precision_of
from converters.quantize.stage import QuantStage, calibration_stats, quantize_stage
from converters.quantize.task_metrics import TaskDecode
from converters.report import EvalReport, SourceReport
from converters.runtime import Latency, make_session, measure_latency, run_batched
from converters.selftest import build_selftest
from converters.shapes import data_row_shapes, specialise
from converters.sources import LOADERS, LoadedModel, SourceLoader
from converters.sources.keras_source import KerasLoader
from converters.stats import class_index, reference_stats
from converters.tasks import decide_task
from converters.validators import CheckResult, ValidationContext
from edgefleet import __version__
from edgefleet.artifact import hash_file
from edgefleet.contract import TensorSpec
from edgefleet.contract.postprocess import Postprocess

MODEL_FILE = "model.onnx"
#: Modules every ONNX conversion needs, imported first so a missing extra is reported first.
REQUIRED_MODULES = ("numpy", "onnx", "onnxruntime")
#: Source kind → loader: the suffix-chosen loaders, and Keras / SavedModel (``--format onnx``).
ONNX_LOADERS: dict[str, SourceLoader] = {**LOADERS, KerasLoader.kind: KerasLoader()}


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


def score_width(outputs: list[TensorSpec]) -> int | None:
    """The class count of the first float ``[N, C]`` output, if any (C > 1)."""
    for spec in outputs:
        if spec.dtype.startswith("float") and len(spec.shape) == 2:
            width = spec.shape[1]
            if isinstance(width, int) and width > 1:
                return width
    return None


def _labels(options: ConvertOptions, loaded: LoadedModel, outputs: list[TensorSpec]) -> list[str]:
    labels = options.labels if options.labels is not None else loaded.labels
    width = score_width(outputs)
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


def _specialise(
    model: Any, inputs: list[TensorSpec], outputs: list[TensorSpec], options: ConvertOptions
) -> tuple[list[TensorSpec], list[TensorSpec], ConvertOptions, list[str]]:
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
        return inputs, outputs, options.model_copy(update={"input_shapes": shapes}), []
    done = specialise(model, inputs=inputs, overrides=options.input_shapes, rows=rows, source=where)
    note = done.note()
    if note is None:
        return inputs, outputs, options, []
    inputs, outputs = tensor_specs(model)
    return inputs, outputs, options, [note]


class OnnxRun:
    """One ONNX conversion after load and normalise (see :class:`converters.formats.FormatRun`)."""

    def __init__(
        self,
        *,
        source: Path,
        loader: SourceLoader,
        loaded: LoadedModel,
        options: ConvertOptions,
        task: ConvertTask,
        postprocess: Postprocess | None,
        decode: TaskDecode | None,
        labels: list[str],
        notes: list[str],
    ) -> None:
        self.source, self.loader, self.loaded, self.options = source, loader, loaded, options
        self.task, self.postprocess, self.decode = task, postprocess, decode
        self.labels, self.notes = labels, notes
        model = loaded.onnx_model
        self.model_bytes: bytes = model.SerializeToString()
        self.inputs, self.outputs = tensor_specs(model)
        self.feeds: dict[str, Any] = {}
        self.onnx_out: dict[str, Any] = {}
        self.eval_set: EvalSet | None = None
        self.eval_sha: str | None = None
        self.session: Any = None
        self.quant: QuantStage | None = None
        self.latency: Latency | None = None

    @property
    def batch(self) -> int | None:
        return batch_of(self.inputs)

    def validation(self) -> ValidationContext:
        self.feeds, self.eval_set, self.eval_sha = _feeds(self.options, self.inputs)
        self.session = make_session(self.model_bytes)
        self.onnx_out = run_batched(self.session, self.feeds, batch=self.batch)
        labelled = self.eval_set is not None and self.eval_set.labels is not None
        # The top-1 check compares the source's predictions on every labelled row.
        rows = None if labelled else check_rows(self.feeds, batch=self.batch, outputs=self.onnx_out)
        total = len(next(iter(self.feeds.values())))
        ref_feeds = self.feeds if rows is None or rows >= total else take_rows(self.feeds, 0, rows)
        return ValidationContext(
            inputs=self.feeds,
            onnx_outputs=self.onnx_out,
            reference_outputs=_reference(self.loaded, ref_feeds),
            reference_rows=rows if rows is not None and rows < total else None,
            output_specs=self.outputs,
            labels=self.eval_set.labels if self.eval_set is not None else None,
            class_values=self.loaded.class_values,
            task=self.task,
            synthetic=self.eval_set is None,
            options=self.options,
        )

    def quantize(self) -> CheckResult | None:
        import onnx

        quant = self.quant = quantize_stage(
            model=self.loaded.onnx_model,
            session=self.session,
            inputs=self.inputs,
            feeds=self.feeds,
            onnx_out=self.onnx_out,
            eval_set=self.eval_set,
            # class names of boxes/masks: not eval labels
            labels=self.labels if self.postprocess is None else [],
            class_values=self.loaded.class_values,
            task=self.task,
            options=self.options,
            decode=self.decode,
        )
        chosen = onnx.load_from_string(quant.outcome.model_bytes)
        name_dynamic_dims(chosen)
        self.model_bytes = chosen.SerializeToString()
        self.inputs, self.outputs = tensor_specs(chosen)
        self.feeds, self.onnx_out = quant.feeds, quant.outcome.outputs
        self.session = make_session(self.model_bytes)
        return quant.check()

    def measure(self) -> None:
        """One deployment-sized batch (usually one row), one thread, after a warm-up."""
        options, feeds = self.options, self.feeds
        batch = deploy_batch(self.inputs[0], options.input_shapes)
        rows = len(next(iter(feeds.values())))
        sample = (
            {k: v[:batch] for k, v in feeds.items()}
            if rows >= batch
            else synthetic_inputs(self.inputs, options.input_shapes, rows=batch)
        )
        self.latency = measure_latency(
            self.session, sample, warmup=options.latency_warmup, runs=options.latency_runs
        )

    def assemble(self, *, name: str, version: str, checks: list[CheckResult]) -> Artifact:
        options, quant, task, latency = self.options, self.quant, self.task, self.latency
        assert latency is not None, "measure() runs before assemble()"
        layout = options.preprocessing.layout if options.preprocessing else None
        n_classes = len(self.labels) or score_width(self.outputs)
        stats = None
        if quant is not None:
            stats = calibration_stats(
                quant,
                self.session,
                batch=self.batch,
                layout=layout,
                n_classes=n_classes,
                classify=task == "classification",
            )
        elif self.eval_set is not None:
            stats = reference_stats(
                self.feeds[self.inputs[0].name],
                layout=layout,
                predicted=class_index(self.onnx_out) if task == "classification" else None,
                n_classes=n_classes,
            )
        selftest = build_selftest(
            self.session,
            self.feeds,
            self.onnx_out,
            count=options.selftest_samples,
            batch=self.batch,
            quantized=quant is not None and quant.config is not None,
        )
        config = config_record(options, eval_sha256=self.eval_sha)
        if quant is not None:
            config.update(quant_record(quant.config))
            config["quant.chosen"] = quant.outcome.report.chosen
        # The shipped model's top-1: the quantized candidate's when one was chosen.
        top1 = check_value(checks, "quantized", "top1")
        digest, size = source_sha256(self.source)
        eval_set = self.eval_set
        return Artifact(
            name=name,
            version=version,
            task=task,
            format="onnx",
            precision=precision_of(quant.config) if quant is not None else "fp32",
            model_file=MODEL_FILE,
            model=self.model_bytes,
            selftest=selftest.npz,
            selftest_atol=selftest.atol,
            selftest_rtol=selftest.rtol,
            selftest_outputs=selftest.outputs,
            source=SourceReport(
                file=self.source.name,
                kind=self.loader.kind,
                sha256=digest,
                size=size,
                framework_version=self.loaded.framework_version,
            ),
            framework=self.loaded.framework,
            eval=EvalReport(
                synthetic=eval_set is None,
                samples=len(next(iter(self.feeds.values()))),
                file=options.eval_data.name if options.eval_data else None,
                sha256=self.eval_sha,
                has_labels=eval_set is not None and eval_set.labels is not None,
            ),
            eval_samples=eval_set.samples if eval_set is not None else None,
            checks=checks,
            latency_ms_p50=latency.p50_ms,
            latency_ms_p95=latency.p95_ms,
            latency_runs=latency.runs,
            threads=latency.threads,
            inputs=self.inputs,
            outputs=self.outputs,
            preprocessing=options.preprocessing,
            labels=self.labels,
            postprocess=self.postprocess,
            top1=top1 if top1 is not None else check_value(checks, "top1", "top1"),
            stats=stats,
            tools=_tools(self.loaded),
            config=config,
            calibration_sha256=quant.calibration.sha256 if quant is not None else None,
            quantization=quant.outcome.report if quant is not None else None,
            extra=extra_metrics(checks),
            notes=[*self.loaded.notes, *self.notes],
        )


class OnnxFormat:
    """Sources through their loader to ONNX (see :class:`converters.formats.ArtifactFormat`)."""

    key = "onnx"

    def modules(self, kind: str) -> tuple[str, ...]:
        return (*REQUIRED_MODULES, *ONNX_LOADERS[kind].modules)

    def load(self, source: Path, *, kind: str, options: ConvertOptions, work: Path) -> OnnxRun:
        loader = ONNX_LOADERS[kind]
        if loader.kind == "pytorch" and not options.input_shapes and options.calibration:
            # A PyTorch module declares no input shape: one calibration row, batch 1, gives it.
            row = peek_row_shape(options.calibration, preprocessing=options.preprocessing)
            options = options.model_copy(update={"input_shapes": {"input": [1, *row]}})
        loaded = loader.load(source, options=options)
        model = loaded.onnx_model
        name_dynamic_dims(model)
        check_opset(model)
        inputs, outputs = tensor_specs(model)
        inputs, outputs, options, notes = _specialise(model, inputs, outputs, options)
        check_overrides(inputs, options.input_shapes)
        if options.preprocessing is not None:
            check_preprocessing(options.preprocessing, inputs[0])
        task = _task(options, loaded)
        task, post, decode = decide_task(options, task, inputs, outputs, notes)
        labels = _labels(options, loaded, outputs) if post is None else list(options.labels or [])
        return OnnxRun(
            source=source,
            loader=loader,
            loaded=loaded,
            options=options,
            task=task,
            postprocess=post,
            decode=decode,
            labels=labels,
            notes=notes,
        )
