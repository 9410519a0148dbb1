"""Real .tflite models for agent tests, made with TensorFlow in a subprocess.

``python -m tests.agent.tflite_factory OUT_DIR`` writes:

- ``digits_fp32.tflite``: the digits logistic regression (weights from ``tests.utils.artifacts``)
  as a Keras Dense + softmax, dynamic batch, float32 in/out;
- ``digits_int8.tflite``: the same model, full-int8 (int8 input and output), calibrated on digits;
- ``conv_fp32.tflite``: a small NHWC conv net, 1×32×32×3 float → 4 class scores, and
  ``conv_reference.npz`` (``input``, ``output``) computed by Keras;
- ``conv_bench.tflite``: two convs on 1×192×192×3 (> 1 ms a call), for ``bench/``.

TensorFlow is imported only here, in its own process, so the agent test process never loads it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def build(out: Path) -> None:
    import tensorflow as tf

    from tests.utils.artifacts import _digits, _trained

    weights, bias, _ = _trained(0)
    x, _ = _digits()

    inputs = tf.keras.Input(shape=(64,), name="input")
    dense = tf.keras.layers.Dense(10, activation="softmax", name="dense")
    model = tf.keras.Model(inputs, dense(inputs))
    dense.set_weights([weights, bias])
    out.mkdir(parents=True, exist_ok=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    (out / "digits_fp32.tflite").write_bytes(converter.convert())

    def representative() -> object:
        for row in x[:300]:
            yield [row[np.newaxis].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    (out / "digits_int8.tflite").write_bytes(converter.convert())

    tf.keras.utils.set_random_seed(0)
    image = tf.keras.Input(shape=(32, 32, 3), batch_size=1, name="image")
    h = tf.keras.layers.Conv2D(8, 3, activation="relu")(image)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    scores = tf.keras.layers.Dense(4, activation="softmax")(h)
    conv = tf.keras.Model(image, scores)
    converter = tf.lite.TFLiteConverter.from_keras_model(conv)
    (out / "conv_fp32.tflite").write_bytes(converter.convert())
    # A bench-sized model (> 1 ms per call on one x86 core): two convs on 192×192×3.
    big_in = tf.keras.Input(shape=(192, 192, 3), batch_size=1, name="image")
    h = tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu")(big_in)
    h = tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    big = tf.keras.Model(big_in, tf.keras.layers.Dense(10, activation="softmax")(h))
    converter = tf.lite.TFLiteConverter.from_keras_model(big)
    (out / "conv_bench.tflite").write_bytes(converter.convert())
    # Keras' own outputs are the reference the LiteRT self-test is checked against.
    probe = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    np.savez(out / "conv_reference.npz", input=probe, output=conv(probe).numpy())


if __name__ == "__main__":
    build(Path(sys.argv[1]))
