"""The LiteRT backend (``format = "tflite"``): ``ai_edge_litert`` with its default XNNPACK
delegate, or ``tflite_runtime`` when LiteRT is not installed; imported on first load.

A LiteRT interpreter owns its tensors, so a session runs one call at a time (the engine's
contract: one inference thread per model), and a feed whose shape differs from the allocated
one resizes the input first (dynamic dims, batch N).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agent.engine.base import BackendOptions, Session, SingleRunner
from agent.errors import InferenceError, ModelLoadError


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError as litert_err:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ModelLoadError(
                "a .tflite model needs the 'ai-edge-litert' package (or 'tflite-runtime'); "
                "pip install ai-edge-litert"
            ) from litert_err
        return Interpreter


class LiteRTSession:
    def __init__(self, interpreter: Any) -> None:
        self._interp = interpreter
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        self._inputs = [d["name"] for d in inputs]
        self._outputs = [d["name"] for d in outputs]
        self._in_index = [(d["name"], int(d["index"])) for d in inputs]
        self._out_index = [int(d["index"]) for d in outputs]
        self._shapes = {int(d["index"]): tuple(int(s) for s in d["shape"]) for d in inputs}
        self._dtypes = {d["name"]: np.dtype(d["dtype"]) for d in (*inputs, *outputs)}
        self._single = (
            (self._in_index[0][0], self._in_index[0][1], self._out_index[0])
            if len(inputs) == 1 and len(outputs) == 1
            else None
        )
        # The hot path calls the compiled interpreter when it is there: the Python wrapper's
        # invoke() first counts references to guard tensor() views, which this session never
        # hands out.
        # (The wrapper's guard counts references to the compiled object, which these bound
        # methods hold, so resizing goes through the compiled object too.)
        native = getattr(interpreter, "_interpreter", None)
        if native is not None and hasattr(native, "Invoke"):
            self._set, self._invoke, self._get = native.SetTensor, native.Invoke, native.GetTensor
            self._resize_input = native.ResizeInputTensor
            self._allocate = native.AllocateTensors
        else:
            self._set, self._invoke, self._get = (
                interpreter.set_tensor,
                interpreter.invoke,
                interpreter.get_tensor,
            )
            self._resize_input = interpreter.resize_tensor_input
            self._allocate = interpreter.allocate_tensors

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        return self._outputs

    def dtypes(self) -> dict[str, np.dtype]:
        return dict(self._dtypes)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._single is not None:  # one input, one output: the common case, kept short
            name, index, out = self._single
            value = feeds[name]
            try:
                if value.shape != self._shapes[index]:
                    self._resize(index, value.shape)
                self._set(index, value)
                self._invoke()
                return [self._get(out)]
            except (ValueError, RuntimeError) as err:
                raise InferenceError(f"litert: {_first_line(err)}") from err
        shapes, set_tensor, get = self._shapes, self._set, self._get
        try:
            for name, index in self._in_index:
                value = feeds[name]
                if value.shape != shapes[index]:
                    self._resize(index, value.shape)
                set_tensor(index, value)
            self._invoke()
            # GetTensor copies, so results stay valid after the next invoke.
            return [get(i) for i in self._out_index]
        except (ValueError, RuntimeError) as err:
            raise InferenceError(f"litert: {_first_line(err)}") from err

    def single(self) -> SingleRunner | None:
        if self._single is None:
            return None
        _, index, out = self._single
        set_tensor, invoke, get, resize = self._set, self._invoke, self._get, self._resize

        def run_single(value: np.ndarray) -> np.ndarray:
            # No shape bookkeeping per call: the interpreter checks the shape against the
            # allocated one itself, and only a refusal (a new batch size) costs a resize.
            try:
                try:
                    set_tensor(index, value)
                except ValueError:
                    resize(index, value.shape)
                    set_tensor(index, value)
                invoke()
                result: np.ndarray = get(out)
            except (ValueError, RuntimeError) as err:
                raise InferenceError(f"litert: {_first_line(err)}") from err
            return result

        return run_single

    def _resize(self, index: int, shape: tuple[int, ...]) -> None:
        self._resize_input(index, np.asarray(shape, dtype=np.int32), True)
        self._allocate()
        self._shapes[index] = shape


class LiteRTBackend:
    name = "tflite"

    def load(self, path: Path, options: BackendOptions) -> Session:
        interpreter_class = _interpreter_class()
        try:
            interpreter = interpreter_class(model_path=str(path), num_threads=options.threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ModelLoadError(f"litert cannot load {path.name}: {_first_line(err)}") from err
        return LiteRTSession(interpreter)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
