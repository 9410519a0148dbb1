"""The TFLite format: a Keras ``.keras``/``.h5`` model or a SavedModel directory (fp32, fp16 and
full-int8 candidates through the same accuracy budget and latency gate as ONNX), an ONNX model
(onnx2tf) or a PyTorch model (litert-torch) made float TFLite, or an existing ``.tflite`` file
validated with LiteRT and wrapped as is.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import msgspec

from converters.assemble import Artifact
from converters.calibration import CalibrationSet, open_calibration, peek_row_shape
from converters.errors import InputError, one_line
from converters.evaldata import load_eval, synthetic_inputs
from converters.inputs import source_sha256
from converters.options import ConvertOptions, config_record
from converters.quantize import metrics
from converters.quantize.gate import benchmark
from converters.quantize.report import QuantizationReport
from converters.quantize.stage import calibration_rows, progress_printer
from converters.report import EvalReport, SourceReport
from converters.shapes import data_row_shapes
from converters.stats import class_index, reference_stats
from converters.tasks import decide_task
from converters.tflite.candidates import TfliteConfig, convert_keras
from converters.tflite.prebuilt import Prebuilt
from converters.tflite.runner import TfliteRunner
from converters.tflite.select import choose_candidate
from converters.tflite.selftest import tflite_selftest
from converters.validators import CheckResult, ValidationContext
from edgefleet.artifact import hash_file
from edgefleet.contract.manifest import Framework

MODEL_FILE = "model.tflite"
#: The manifest's source framework by source kind (Keras and SavedModel: "keras").
_FRAMEWORKS: dict[str, Framework] = {"tflite": "tflite"}
FP32 = TfliteConfig(kind="tflite_fp32")


def _load_keras(path: Path) -> Any:
    import tensorflow as tf

    try:
        return tf.keras.models.load_model(str(path), compile=False)
    except Exception as err:  # Keras raises ValueError/OSError/its own types
        raise InputError(f"{path.name} is not a loadable Keras model: {one_line(err)}") from err


def _predict(model: Any, x: Any) -> Any:
    """The source's own prediction: Keras ``predict``, or a SavedModel's serving signature."""
    if not isinstance(model, Path):
        return model.predict(x, verbose=0)
    import tensorflow as tf

    try:
        signature = tf.saved_model.load(str(model)).signatures["serving_default"]
        (key,) = signature.structured_input_signature[1].keys()
        outputs = signature(**{key: tf.constant(x)})
    except (KeyError, ValueError) as err:
        raise InputError(
            f"{model.name}: needs a 'serving_default' signature with one input ({one_line(err)})"
        ) from err
    return next(iter(outputs.values())).numpy()


def _tools() -> dict[str, str]:
    import ai_edge_litert
    import numpy as np

    from edgefleet import __version__

    tools = {"edgefleet": __version__, "numpy": np.__version__}
    tools["ai-edge-litert"] = str(getattr(ai_edge_litert, "__version__", "unknown"))
    with contextlib.suppress(ImportError):
        import tensorflow as tf

        tools["tensorflow"] = str(tf.__version__)
    return tools


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


def _prebuild(
    source: Path, kind: str, options: ConvertOptions, work: Path
) -> tuple[Prebuilt | None, ConvertOptions]:
    """A float TFLite model another tool makes from ONNX or PyTorch (None for other sources);
    the options follow an input onnx2tf turned NHWC (data rewritten into ``work``)."""
    if kind == "pytorch":
        from converters.tflite.from_torch import torch_to_tflite

        if not options.input_shapes and options.calibration:
            row = peek_row_shape(options.calibration, preprocessing=options.preprocessing)
            options = options.model_copy(update={"input_shapes": {"input": [1, *row]}})
        progress_printer(options.progress)("PyTorch → TFLite with litert-torch")
        return torch_to_tflite(source, options=options), options
    if kind != "onnx":
        return None, options
    from converters.tflite.from_onnx import nhwc_copy, onnx_to_tflite

    progress_printer(options.progress)("ONNX → TFLite with onnx2tf")
    converted = onnx_to_tflite(source, input_shapes=_onnx_input_shapes(source, options))
    if converted.nhwc:
        # onnx2tf made the image input NHWC: the data and the manifest follow it.
        update: dict[str, object] = {}
        for key in ("calibration", "eval_data"):
            data = getattr(options, key)
            if data is not None and data.suffix.lower() == ".npz":
                update[key] = nhwc_copy(data, work)
        if options.preprocessing is not None:
            update["preprocessing"] = msgspec.structs.replace(options.preprocessing, layout="nhwc")
        options = options.model_copy(update=update)
    return converted, options


class TfliteRun:
    """One TFLite conversion after load (see :class:`converters.formats.FormatRun`)."""

    def __init__(
        self, source: Path, kind: str, options: ConvertOptions, prebuilt: Prebuilt | None
    ) -> None:
        self.source, self.kind, self.options, self.prebuilt = source, kind, options, prebuilt
        self.progress = progress_printer(options.progress, verbose=options.verbose)
        self.keras_model: Any = None
        if kind == "keras":
            self.keras_model = _load_keras(source)
        elif kind == "savedmodel":
            self.keras_model = source  # TFLiteConverter.from_saved_model reads the directory
        if self.keras_model is not None:
            self.fp32_bytes = convert_keras(self.keras_model, FP32, None)
        elif prebuilt is not None:
            self.fp32_bytes = prebuilt.model
        else:
            self.fp32_bytes = source.read_bytes()
        self.base = TfliteRunner(self.fp32_bytes, what=source.name)
        self.float_inputs, self.float_outputs = self.base.specs(float_view=True)
        self.calib: CalibrationSet | None = None
        if options.calibration is not None:
            self.calib = open_calibration(
                options.calibration, inputs=self.float_inputs,
                preprocessing=options.preprocessing, labels=options.labels,
            )  # fmt: skip
        self.eval_set = None
        self.labels: Any | None
        if options.eval_data is not None:
            self.eval_set = load_eval(
                options.eval_data, inputs=self.float_inputs, max_bytes=options.max_eval_bytes
            )
            self.feeds, self.labels = self.eval_set.inputs, self.eval_set.labels
        elif self.calib is not None:
            self.feeds, self.labels = calibration_rows(self.calib, options.max_eval_rows)
        else:
            self.feeds = synthetic_inputs(self.float_inputs, {}, rows=options.synthetic_samples)
            self.labels = None
        self.base_out = self.base.predict(self.feeds)
        self.notes: list[str] = []
        self.task, self.postprocess, self.decode = decide_task(
            options, options.task or ("classification" if options.labels else "raw"),
            self.float_inputs, self.float_outputs, self.notes,
        )  # fmt: skip
        self.chosen_bytes, self.chosen_cfg = self.fp32_bytes, FP32
        self.quant_report: QuantizationReport | None = None
        self.runner: TfliteRunner | None = None
        self.timing: Any = None

    @property
    def synthetic(self) -> bool:
        return self.eval_set is None and self.calib is None

    def validation(self) -> ValidationContext:
        reference = self.base_out
        if self.keras_model is not None:
            import numpy as np

            predicted = _predict(self.keras_model, next(iter(self.feeds.values())))
            reference = {self.float_outputs[0].name: np.asarray(predicted)}
        elif self.prebuilt is not None:  # the TFLite model must behave like the model it came from
            reference = {self.float_outputs[0].name: self.prebuilt.reference(self.feeds)}
        return ValidationContext(
            inputs=self.feeds,
            onnx_outputs=self.base_out,
            reference_outputs=reference,
            output_specs=self.float_outputs,
            labels=self.labels,
            class_values=None,
            task=self.task,
            synthetic=self.synthetic,
            options=self.options,
        )

    def quantize(self) -> CheckResult | None:
        mode = self.options.quantize_mode
        what = (
            f"a {self.prebuilt.framework} source becomes a float TFLite model"
            if self.prebuilt is not None
            else "an existing .tflite file is wrapped as is"
        )
        if mode in ("int8", "fp16") and self.keras_model is None:
            raise InputError(f"--quantize {mode}: {what}; use none (or --format onnx)")
        if self.keras_model is None:
            # No TFLite → TFLite quantizer here (that needs the source model): auto keeps fp32.
            self.notes.append(f"--quantize auto: {what} (fp32)")
            return None
        assert self.calib is not None  # the pipeline requires --calibration for quantization
        self.chosen_bytes, self.chosen_cfg, self.quant_report = choose_candidate(
            self.keras_model, self.base, self.base_out, self.feeds, self.labels, self.task,
            self.calib, self.options, self.progress, self.decode,
        )  # fmt: skip
        return None

    def measure(self) -> None:
        runner = self.runner = TfliteRunner(self.chosen_bytes, what=MODEL_FILE)
        self.timing = benchmark(
            {"m": runner}, {k: v[:1] for k, v in self.feeds.items()},
            warmup=self.options.latency_warmup, rounds=1,
            runs_per_round=self.options.latency_runs,
        )["m"]  # fmt: skip

    def assemble(self, *, name: str, version: str, checks: list[CheckResult]) -> Artifact:
        runner, options, feeds, timing = self.runner, self.options, self.feeds, self.timing
        assert runner is not None, "measure() runs before assemble()"
        inputs, outputs = runner.specs()
        out = runner.predict(feeds)
        selftest, atol, rtol = tflite_selftest(runner, feeds)
        first = next(iter(feeds.values()))
        width = outputs[0].shape[-1] if outputs and len(outputs[0].shape) == 2 else None
        stats = reference_stats(
            first,
            layout=options.preprocessing.layout if options.preprocessing else None,
            predicted=class_index(out) if self.task == "classification" else None,
            n_classes=len(options.labels or []) or (width if isinstance(width, int) else None),
        )
        top1 = None
        if self.labels is not None and self.task == "classification":
            top1 = metrics.score("top1", out, self.base_out, labels=self.labels, class_values=None)
        tools = _tools()
        eval_sha = hash_file(options.eval_data)[0] if options.eval_data else None
        config = config_record(options, eval_sha256=eval_sha)
        config["quant.kind"] = self.chosen_cfg.kind
        if self.chosen_cfg.denylisted_nodes:
            config["quant.denylisted_nodes"] = len(self.chosen_cfg.denylisted_nodes)
        digest, size = source_sha256(self.source)
        prebuilt = self.prebuilt
        return Artifact(
            name=name,
            version=version,
            task=self.task,
            format="tflite",
            precision=(
                self.chosen_cfg.precision if self.keras_model is not None else runner.precision()
            ),
            model_file=MODEL_FILE,
            model=self.chosen_bytes,
            selftest=selftest,
            selftest_atol=atol,
            selftest_rtol=rtol,
            selftest_outputs=[o.name for o in outputs],
            source=SourceReport(
                file=self.source.name,
                kind=self.kind,
                sha256=digest,
                size=size,
                framework_version=tools.get("tensorflow"),
            ),
            framework=prebuilt.framework if prebuilt else _FRAMEWORKS.get(self.kind, "keras"),
            eval=EvalReport(
                synthetic=self.synthetic,
                samples=len(first),
                file=options.eval_data.name if options.eval_data else None,
                has_labels=self.labels is not None,
            ),
            eval_samples=len(first),
            checks=checks,
            latency_ms_p50=timing.p50_ms,
            latency_ms_p95=timing.p95_ms,
            latency_runs=timing.runs,
            threads=1,
            inputs=inputs,
            outputs=outputs,
            preprocessing=options.preprocessing,
            labels=options.labels or [],
            postprocess=self.postprocess,
            top1=top1,
            stats=stats,
            tools=tools,
            config=config,
            calibration_sha256=self.calib.sha256 if self.calib is not None else None,
            quantization=self.quant_report,
            notes=self.notes,
        )


class TfliteFormat:
    """Sources to a LiteRT artifact (see :class:`converters.formats.ArtifactFormat`)."""

    key = "tflite"

    def modules(self, kind: str) -> tuple[str, ...]:
        return (
            ("ai_edge_litert", "tensorflow")
            if kind in ("keras", "savedmodel")
            else ("ai_edge_litert",)
        )

    def load(self, source: Path, *, kind: str, options: ConvertOptions, work: Path) -> TfliteRun:
        prebuilt, options = _prebuild(source, kind, options, work)
        return TfliteRun(source, kind, options, prebuilt)
