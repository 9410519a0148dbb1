"""Keras models (``.keras``, ``.h5``) and SavedModel directories → ONNX through tf2onnx.

Without ``--format onnx`` these sources become TFLite artifacts (:mod:`converters.tflite`);
this loader is the other road, so one Keras model can ship to an onnxruntime fleet as well.
The reference is TensorFlow's own prediction (Keras ``predict``, or the SavedModel's
``serving_default`` signature), compared with the ONNX model by the usual validators.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converters.errors import ConvertError, InputError, one_line
from converters.options import ConvertOptions
from converters.quiet import tool_output
from converters.sources.base import LoadedModel

#: The opset tf2onnx is asked for (the converter's own gate accepts 11-21).
OPSET = 17


def _keras(path: Path) -> Any:
    import tensorflow as tf

    try:
        return tf.keras.models.load_model(str(path), compile=False)
    except Exception as err:  # Keras raises ValueError/OSError/its own types
        raise InputError(f"{path.name} is not a loadable Keras model: {one_line(err)}") from err


def _signature(path: Path) -> tuple[Any, Any]:
    """The loaded SavedModel (kept alive: its variables die with it) and its signature."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
        function = loaded.signatures["serving_default"]
    except (KeyError, ValueError, OSError) as err:
        raise InputError(
            f"{path.name}: needs a loadable SavedModel with a 'serving_default' signature "
            f"({one_line(err)})"
        ) from err
    return loaded, function


def _spec(shape: Any, dtype: Any, name: str, override: list[int] | None) -> Any:
    import tensorflow as tf

    dims = list(shape)
    if override is not None:
        if len(override) != len(dims):
            raise InputError(
                f"--input-shape {name}: {len(override)} dims given, the model has {len(dims)}"
            )
        dims = [None if i == 0 else d for i, d in enumerate(override)]  # the batch stays free
    return tf.TensorSpec(dims, dtype, name=name)


class KerasLoader:
    """A Keras model or a SavedModel directory, converted with tf2onnx."""

    kind: str = "keras"
    suffixes: tuple[str, ...] = (".keras", ".h5")
    modules: tuple[str, ...] = ("tensorflow", "tf2onnx")

    def load(self, path: Path, *, options: ConvertOptions) -> LoadedModel:
        import numpy as np
        import tensorflow as tf
        import tf2onnx

        notes: list[str] = []
        if path.is_dir():
            loaded, function = _signature(path)
            specs = function.structured_input_signature[1]
            keys = sorted(specs)
            signature = [
                _spec(specs[k].shape, specs[k].dtype, k, options.input_shapes.get(k)) for k in keys
            ]
            # tf2onnx traces a tf.function; the signature takes keywords, the trace positions.
            wrapped = tf.function(
                lambda *args: function(**dict(zip(keys, args, strict=True))),
                input_signature=signature,
            )
            convert_from: Any = lambda: tf2onnx.convert.from_function(  # noqa: E731
                wrapped, input_signature=signature, opset=OPSET
            )

            def predict(feeds: Mapping[str, Any]) -> dict[str, Any]:
                out = function(**{k: tf.constant(v) for k, v in feeds.items()})
                _ = loaded  # the variables live as long as this reference function
                return {k: v.numpy() for k, v in out.items()}

            notes.append("SavedModel serving_default signature")
        else:
            model = _keras(path)
            signature = [
                _spec(t.shape, t.dtype, t.name.split(":")[0], options.input_shapes.get(t.name))
                for t in model.inputs
            ]
            # Traced as a tf.function: tf2onnx's from_keras loses Keras 3 tensor names
            # (KeyError 'keras_tensor_27' on a Sequential model).
            traced = tf.function(
                lambda *args: model(list(args) if len(args) > 1 else args[0]),
                input_signature=signature,
            )
            convert_from = lambda: tf2onnx.convert.from_function(  # noqa: E731
                traced, input_signature=signature, opset=OPSET
            )
            predict_names: list[str] = []

            def predict(feeds: Mapping[str, Any]) -> dict[str, Any]:
                ordered = [np.asarray(feeds[s.name]) for s in signature]
                out = model.predict(ordered if len(ordered) > 1 else ordered[0], verbose=0)
                values = out if isinstance(out, list | tuple) else [out]
                return dict(zip(predict_names, values, strict=True))

        try:
            with tool_output():
                onnx_model, _ = convert_from()
        except Exception as err:  # tf2onnx raises many unrelated types
            raise ConvertError(f"tf2onnx could not convert {path.name}: {one_line(err)}") from err
        output_names = [o.name for o in onnx_model.graph.output]
        if not path.is_dir():
            predict_names.extend(output_names)

        def reference(feeds: Mapping[str, Any]) -> dict[str, Any]:
            out = predict(feeds)
            missing = set(output_names) - set(out)
            if missing:  # the ONNX graph named an output differently from the source
                raise ConvertError(
                    f"tf2onnx named outputs {sorted(output_names)}; the source gives {sorted(out)}"
                )
            return {name: out[name] for name in output_names}

        return LoadedModel(
            framework="keras",
            onnx_model=onnx_model,
            reference=reference,
            task=options.task or "raw",
            framework_version=str(tf.__version__)[:64],
            tools={"tensorflow": str(tf.__version__), "tf2onnx": str(tf2onnx.__version__)},
            notes=notes,
        )
