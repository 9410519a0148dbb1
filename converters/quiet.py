"""Third-party logging off by default: TensorFlow's C++ and Python loggers, absl and the
TFLite converter print dozens of lines per conversion that say nothing to the user. Applied by
the CLI before any of them is imported (``--verbose`` keeps them)."""

from __future__ import annotations

import logging
import os

#: Environment read once by TensorFlow's and the TFLite converter's C++ logging at import.
_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "2", "ABSL_MIN_LOG_LEVEL": "3"}
_LOGGERS = ("tensorflow", "absl", "h5py", "keras", "tf2onnx", "onnx2tf", "torch.onnx")


def quiet_third_party() -> None:
    """Silence the noisy libraries (a user's own setting of the variables wins)."""
    for name, value in _ENV.items():
        os.environ.setdefault(name, value)
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
