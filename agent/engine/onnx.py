"""The onnxruntime backend (``format = "onnx"``); onnxruntime is imported on first load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agent.engine.base import BackendOptions, Session
from agent.errors import InferenceError, ModelLoadError


class OnnxSession:
    def __init__(self, session: Any) -> None:
        self._session = session
        self._inputs = [i.name for i in session.get_inputs()]
        self._outputs = [o.name for o in session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        return self._outputs

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            outputs: list[np.ndarray] = self._session.run(self._outputs, feeds)
        except Exception as err:  # onnxruntime raises its own untyped exceptions
            raise InferenceError(f"onnxruntime: {_first_line(err)}") from err
        return outputs


class OnnxBackend:
    name = "onnx"

    def load(self, path: Path, options: BackendOptions) -> Session:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                str(path), sess_options=so, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own untyped exceptions
            raise ModelLoadError(
                f"onnxruntime cannot load {path.name}: {_first_line(err)}"
            ) from err
        return OnnxSession(session)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
