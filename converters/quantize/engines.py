"""Quantization engines: one per config type, in a hand-written registry keyed by that type.

``quantize(config, source=..., target=..., calibration=...)`` looks the engine up by
``type(config)`` (as onnxruntime's ``quantization.quantize`` does with its configs) and writes
the quantized model to ``target``. Engines raise :class:`QuantizeError` with one line.

With ``cache`` (a directory), static int8 calibrates once per range estimator: onnxruntime's
``calibration_cache_path`` keeps the tensor ranges (``<method>.json``), and every later build
with that method (QDQ or QOperator, per-channel or not, each budget-loop step) reuses them.
The ranges cover every tensor of :data:`INT8_OPS` whatever nodes are excluded, and do not depend
on the activation type (``ActivationSymmetric`` acts on the quantizer, not the calibrator), so
one cache is right for all of them; the caller keeps one cache per calibration row set.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from converters.errors import one_line
from converters.quantize.configs import DynamicInt8, Fp16, StaticInt8

#: Op types int8 engines quantize (others stay float).
INT8_OPS = ("Conv", "MatMul", "Gemm", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
            "Add", "Mul", "Concat", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
            "Resize", "ConvTranspose", "Clip", "LeakyRelu")  # fmt: skip
DYNAMIC_OPS = ("MatMul", "Gemm", "Attention", "LSTM")

#: A zero-argument factory for a fresh onnxruntime ``CalibrationDataReader``.
ReaderFactory = Callable[[], Any]


class QuantizeError(Exception):
    """An engine could not produce a model; one line."""


class Engine(Protocol):
    def run(
        self,
        config: Any,
        *,
        source: Path,
        target: Path,
        calibration: ReaderFactory,
        cache: Path | None = None,
    ) -> None: ...


def _qtype(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "int8" else QuantType.QUInt8


class StaticInt8Engine:
    def run(
        self,
        config: StaticInt8,
        *,
        source: Path,
        target: Path,
        calibration: ReaderFactory,
        cache: Path | None = None,
    ) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[config.method]
        extra: dict[str, Any] = {}
        if config.activation == "int8":
            extra["ActivationSymmetric"] = True
        if config.method == "percentile":
            extra["CalibPercentile"] = 99.99
        cache_file: Path | None = None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            cache_file = cache / f"{config.method}.json"

        quantize_static(
            source,
            target,
            None if cache_file is not None and cache_file.is_file() else calibration(),
            calibration_cache_path=cache_file,
            quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=list(INT8_OPS),
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=_qtype(config.activation),
            weight_type=_qtype(config.weight),
            nodes_to_exclude=list(config.excluded_nodes),
            calibrate_method=method,
            extra_options=extra,  # onnxruntime's own API; our side stays typed
        )


class DynamicInt8Engine:
    def run(
        self,
        config: DynamicInt8,
        *,
        source: Path,
        target: Path,
        calibration: ReaderFactory,
        cache: Path | None = None,
    ) -> None:
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=list(DYNAMIC_OPS),
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            weight_type=_qtype(config.weight),
            nodes_to_exclude=list(config.excluded_nodes),
        )


class Fp16Engine:
    def run(
        self,
        config: Fp16,
        *,
        source: Path,
        target: Path,
        calibration: ReaderFactory,
        cache: Path | None = None,
    ) -> None:
        import onnx

        try:
            from onnxruntime.transformers.float16 import convert_float_to_float16
        except ImportError as err:
            raise QuantizeError(
                "fp16 needs onnxruntime.transformers.float16, which is not available"
            ) from err
        model = onnx.load(str(source))
        converted = convert_float_to_float16(model, keep_io_types=config.keep_io_types)
        target.write_bytes(converted.SerializeToString())


#: config type → engine (hand-written registry).
ENGINES: dict[type, Engine] = {
    StaticInt8: StaticInt8Engine(),
    DynamicInt8: DynamicInt8Engine(),
    Fp16: Fp16Engine(),
}


def fp16_available() -> str | None:
    """None when the fp16 engine can run here, else the reason it cannot."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16  # noqa: F401
    except ImportError:
        return "onnxruntime.transformers.float16 is not importable (onnxconverter-common absent)"
    return None


def quantize(
    config: StaticInt8 | DynamicInt8 | Fp16,
    *,
    source: Path,
    target: Path,
    calibration: ReaderFactory,
    cache: Path | None = None,
) -> bytes:
    """Run the engine for ``type(config)``; the quantized model's bytes. ``cache``: a
    directory where static int8 keeps (and reuses) its calibrated ranges, one file a method."""
    engine = ENGINES[type(config)]
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization logs through the root logger
    try:
        # onnxruntime's calibrators print progress to stdout, which belongs to --json.
        with contextlib.redirect_stdout(io.StringIO()):
            engine.run(config, source=source, target=target, calibration=calibration, cache=cache)
        return target.read_bytes()
    except QuantizeError:
        raise
    except Exception as err:  # onnxruntime's quantizer raises many untyped errors
        raise QuantizeError(one_line(err, limit=200)) from err
    finally:
        root.setLevel(level)
