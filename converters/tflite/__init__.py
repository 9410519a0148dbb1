"""TFLite artifacts: Keras models converted with ``tf.lite.TFLiteConverter`` (fp32, fp16,
full-int8) and existing ``.tflite`` files, validated and timed with LiteRT."""
