"""The onnxruntime backend (``format = "onnx"``); onnxruntime is imported on first load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agent.engine.base import BackendOptions, Session, SingleRunner
from agent.errors import InferenceError, ModelLoadError

#: onnxruntime's ``tensor(...)`` type strings → numpy element types.
ORT_DTYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class OnnxSession:
    def __init__(self, session: Any) -> None:
        self._session = session
        self._inputs = [i.name for i in session.get_inputs()]
        self._outputs = [o.name for o in session.get_outputs()]
        # The hot path calls onnxruntime's compiled session when it is there: the Python
        # wrapper's run() re-validates the feeds on every call, which the engine has done.
        compiled = getattr(session, "_sess", None)
        self._run = compiled.run if compiled is not None else session.run

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        return self._outputs

    def dtypes(self) -> dict[str, np.dtype]:
        infos = [*self._session.get_inputs(), *self._session.get_outputs()]
        return {i.name: np.dtype(ORT_DTYPES.get(i.type, "object")) for i in infos}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            outputs: list[np.ndarray] = self._run(self._outputs, feeds, None)
        except Exception as err:  # onnxruntime raises its own untyped exceptions
            raise InferenceError(f"onnxruntime: {_first_line(err)}") from err
        return outputs

    def single(self) -> SingleRunner | None:
        if len(self._inputs) != 1 or len(self._outputs) != 1:
            return None
        run, name, outputs = self._run, self._inputs[0], self._outputs

        def run_single(value: np.ndarray) -> np.ndarray:
            try:
                result: np.ndarray = run(outputs, {name: value}, None)[0]
            except Exception as err:  # onnxruntime raises its own untyped exceptions
                raise InferenceError(f"onnxruntime: {_first_line(err)}") from err
            return result

        return run_single


class OnnxBackend:
    name = "onnx"

    def load(self, path: Path, options: BackendOptions) -> Session:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ModelLoadError(
                f"{path.name} is an ONNX model and this device has no 'onnxruntime' "
                "(there are no onnxruntime wheels for 32-bit ARM, armv7l): serve a .tflite "
                "artifact here, or pip install onnxruntime where it exists"
            ) from err

        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = levels[options.graph_optimization]
        so.log_severity_level = 3
        so.enable_cpu_mem_arena = options.cpu_mem_arena
        so.enable_mem_pattern = options.mem_pattern
        available = set(ort.get_available_providers())
        providers = [p for p in options.execution_providers if p in available]
        if not providers:
            raise ModelLoadError(
                f"none of the execution providers {list(options.execution_providers)} is "
                f"available (onnxruntime has {sorted(available)})"
            )
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as err:  # onnxruntime raises its own untyped exceptions
            raise ModelLoadError(
                f"onnxruntime cannot load {path.name}: {_first_line(err)}"
            ) from err
        return OnnxSession(session)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
