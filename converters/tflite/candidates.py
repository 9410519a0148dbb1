"""Keras → TFLite candidates: fp32, fp16 and full-int8 (int8 inputs and outputs), each a typed
config converted by ``tf.lite.TFLiteConverter``; int8 is calibrated from the calibration set."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from converters.calibration import CalibrationSet
from converters.errors import ConvertError, one_line
from converters.tflite.runner import stdout_to_stderr


class TfliteConfig(BaseModel):
    """One TFLite conversion."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tflite_fp32", "tflite_fp16", "tflite_int8"] = Field(description="Precision.")
    representative_rows: int = Field(default=256, ge=1, description="int8 calibration rows.")
    denylisted_nodes: tuple[str, ...] = Field(
        default=(),
        description="int8 only: output tensors whose ops stay float (the accuracy-budget loop's "
        "denylist, converters.tflite.denylist); the model then keeps float inputs and outputs.",
    )

    @model_validator(mode="after")
    def _denylist_is_int8(self) -> TfliteConfig:
        if self.denylisted_nodes and self.kind != "tflite_int8":
            raise ValueError("denylisted_nodes applies to tflite_int8 only")
        return self

    @property
    def name(self) -> str:
        if self.denylisted_nodes:
            return f"int8-mixed-x{len(self.denylisted_nodes)}"
        return {"tflite_fp32": "fp32", "tflite_fp16": "fp16", "tflite_int8": "int8-full"}[self.kind]

    @property
    def precision(self) -> Literal["fp32", "fp16", "int8", "mixed"]:
        if self.denylisted_nodes:
            return "mixed"
        return {"tflite_fp32": "fp32", "tflite_fp16": "fp16", "tflite_int8": "int8"}[self.kind]  # type: ignore[return-value]


def _fp32(converter: Any, tf: Any, calib: CalibrationSet | None, rows: int) -> None:
    return None


def _fp16(converter: Any, tf: Any, calib: CalibrationSet | None, rows: int) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def _int8(converter: Any, tf: Any, calib: CalibrationSet | None, rows: int) -> None:
    if calib is None:
        raise ConvertError("full-int8 needs --calibration")

    def representative() -> Iterator[list[Any]]:
        for row in calib.rows(limit=rows):
            yield list(row.values())

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8


#: config kind → converter set-up (hand-written registry, dispatched on the typed config).
SETUPS: dict[str, Callable[[Any, Any, CalibrationSet | None, int], None]] = {
    "tflite_fp32": _fp32,
    "tflite_fp16": _fp16,
    "tflite_int8": _int8,
}


def tflite_converter(model: Any) -> Any:
    """A ``tf.lite.TFLiteConverter`` for ``model`` (a Keras model, or a SavedModel's path)."""
    import tensorflow as tf

    if isinstance(model, Path):
        return tf.lite.TFLiteConverter.from_saved_model(str(model))
    return tf.lite.TFLiteConverter.from_keras_model(model)


def convert_keras(model: Any, config: TfliteConfig, calib: CalibrationSet | None) -> bytes:
    """The ``.tflite`` bytes of ``model`` (a Keras model, or a SavedModel directory's path)."""
    import tensorflow as tf

    if config.denylisted_nodes:
        if calib is None:
            raise ConvertError("int8 with a denylist needs --calibration")
        from converters.tflite.denylist import DebugSession

        session = DebugSession(model, calib, rows=config.representative_rows)
        return session.quantize(config.denylisted_nodes)
    converter = tflite_converter(model)
    SETUPS[config.kind](converter, tf, calib, config.representative_rows)
    try:
        with stdout_to_stderr():
            return bytes(converter.convert())
    except Exception as err:  # TF raises ConverterError and many others
        raise ConvertError(f"TFLite {config.name} conversion failed: {one_line(err)}") from err
