"""Loading an artifact into a served model: verify → session → warm-up → self-test.

A :class:`LoadedModel` is only ever created by :func:`load_model`, so a model that exists has
passed every check. Its :meth:`~LoadedModel.infer` checks feeds against the manifest with
precomputed specs and hands them straight to the runtime.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.engine.base import BackendOptions, Session, SingleRunner
from agent.engine.quant import dequantize
from agent.engine.registry import backend_for
from agent.errors import InferenceError, ModelLoadError
from agent.memory import check_estimate, check_loaded
from edgefleet.artifact import ArtifactError, load_artifact
from edgefleet.contract import Manifest, ModelRef, TensorSpec

#: Self-test files are small; a bigger one is refused before numpy reads it.
MAX_SELFTEST_BYTES = 64 * 1024 * 1024
#: Shapes remembered per input as already checked (dynamic dims: batch sizes seen).
MAX_ACCEPTED_SHAPES = 16

Infer = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class _InputSpec:
    name: str
    dims: tuple[int | None, ...]  # None: dynamic
    dtype: np.dtype
    static: tuple[int, ...] | None  # the shape when no dimension is dynamic

    def check(self, value: np.ndarray | None) -> None:
        if value is None:
            raise InferenceError(f"missing input {self.name!r}")
        if not isinstance(value, np.ndarray):
            raise InferenceError(f"input {self.name!r}: not an array")
        if value.dtype != self.dtype:
            raise InferenceError(f"input {self.name!r}: dtype {value.dtype} != model {self.dtype}")
        shape = value.shape
        if shape == self.static:
            return
        if len(shape) != len(self.dims) or any(
            d is not None and d != s for d, s in zip(self.dims, shape, strict=True)
        ):
            want = tuple("?" if d is None else d for d in self.dims)
            raise InferenceError(f"input {self.name!r}: shape {shape} does not fit model {want}")


def numpy_dtype(spec: TensorSpec) -> np.dtype:
    return np.dtype("bool" if spec.dtype == "bool" else spec.dtype)


def static_shape(spec: TensorSpec, *, dynamic: int = 1) -> tuple[int, ...]:
    """The spec's shape with every dynamic dimension set to ``dynamic``."""
    return tuple(d if isinstance(d, int) else dynamic for d in spec.shape)


class LoadedModel:
    """A verified, warmed-up, self-tested model; safe to call from one thread at a time.

    ``infer(batch)`` runs one batch (InferenceError names the input that does not fit). For a
    one-input, one-output model it is a closure with everything bound at load, which hands an
    already-accepted input straight to the backend's :meth:`~Session.single` runner.
    """

    infer: Infer

    def __init__(self, *, manifest: Manifest, directory: Path, session: Session) -> None:
        self.manifest = manifest
        self.directory = directory
        self._session = session
        self._inputs = tuple(
            _InputSpec(
                name=s.name,
                dims=tuple(d if isinstance(d, int) else None for d in s.shape),
                dtype=numpy_dtype(s),
                static=tuple(d for d in s.shape if isinstance(d, int))
                if all(isinstance(d, int) for d in s.shape)
                else None,
            )
            for s in manifest.inputs
        )
        self._output_names = tuple(session.output_names)
        # Neither callable refers back to this object (no reference cycle: a swapped-out
        # model and its runtime session are freed as soon as the last job drops it).
        checked = _CheckedInfer(self._inputs, session.run, self._output_names)
        single = session.single() if len(self._inputs) == 1 else None
        self.infer = _single_path(checked, single) if single is not None else checked
        self.scores_output = _scores_output(manifest)
        #: Quantized outputs: name → params, for :meth:`real`.
        self.output_quant = {
            s.name: s.quantization
            for s in manifest.outputs
            if s.quantization is not None and s.dtype in ("int8", "uint8", "int16", "int32")
        }

    @property
    def ref(self) -> ModelRef:
        return self.manifest.ref

    def real(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs with quantized tensors turned into real values (scale/zero-point)."""
        if not self.output_quant:
            return outputs
        return {
            name: dequantize(value, self.output_quant[name]) if name in self.output_quant else value
            for name, value in outputs.items()
        }

    def probabilities(self, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
        """Per-class scores in [0, 1] per batch row (softmax of logits) for classifiers."""
        if self.scores_output is None:
            return None
        scores = self.real({self.scores_output: outputs[self.scores_output]})[self.scores_output]
        scores = scores.reshape(scores.shape[0], -1).astype(np.float32, copy=False)
        if scores.size and (scores.min() < 0 or scores.max() > 1):
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = shifted / shifted.sum(axis=1, keepdims=True)
        return scores

    def top1(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
        """(class indices, confidences) per batch row for classifiers; None otherwise."""
        scores = self.probabilities(outputs)
        if scores is None:
            return None
        index = scores.argmax(axis=1)
        return index, scores[np.arange(scores.shape[0]), index]


class _CheckedInfer:
    """The general ``infer``: checks each input against the manifest, then runs the session.

    Shapes already accepted per input are remembered, so a repeated batch is checked with one
    dtype identity test and one set lookup per input.
    """

    def __init__(
        self,
        inputs: tuple[_InputSpec, ...],
        run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
        output_names: tuple[str, ...],
    ) -> None:
        self.inputs = inputs
        self.n_inputs = len(inputs)
        #: (name, dtype, shapes already checked) per input.
        self.fast = tuple(
            (spec.name, spec.dtype, set() if spec.static is None else {spec.static})
            for spec in inputs
        )
        self.input_names = frozenset(spec.name for spec in inputs)
        self.output_names = output_names
        self.run = run

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Fast path: every input has the dtype (builtin dtypes are singletons, so ``is``
        # decides) and a shape already accepted for it.
        if len(batch) == self.n_inputs:
            try:
                for name, dtype, accepted in self.fast:
                    value = batch[name]
                    if value.dtype is not dtype or value.shape not in accepted:
                        break
                else:
                    # strict=False: a session returns one array per output name by contract.
                    return dict(zip(self.output_names, self.run(batch), strict=False))
            except (KeyError, AttributeError):
                pass  # not a fast-path batch: the checks below name what is wrong
        for spec in self.inputs:
            spec.check(batch.get(spec.name))
        if len(batch) != self.n_inputs:
            extra = sorted(set(batch) - self.input_names)
            raise InferenceError(f"unknown inputs {extra[:5]}")
        for (_, _, accepted), spec in zip(self.fast, self.inputs, strict=True):
            if len(accepted) < MAX_ACCEPTED_SHAPES:
                accepted.add(batch[spec.name].shape)
        return dict(zip(self.output_names, self.run(batch), strict=True))


def _single_path(checked: _CheckedInfer, run: SingleRunner) -> Infer:
    """``infer`` for one input and one output, kept to one frame per call: an input of the
    model's dtype and an accepted shape goes straight to the backend's single runner."""
    name, dtype, accepted = checked.fast[0]
    out = checked.output_names[0]
    ndarray = np.ndarray

    def infer(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(batch) == 1:
            value = batch.get(name)
            # dtype: builtin dtypes are singletons, so ``is`` decides.
            if value.__class__ is ndarray and value.dtype is dtype and value.shape in accepted:
                return {out: run(value)}
        return checked(batch)

    return infer


def _scores_output(manifest: Manifest) -> str | None:
    """The output holding per-class scores: a float [batch, n_classes] tensor."""
    if manifest.task != "classification":
        return None
    for spec in manifest.outputs:
        real = spec.dtype.startswith("float") or spec.quantization is not None
        if real and len(spec.shape) == 2:
            classes = spec.shape[1]
            if not manifest.labels or classes == len(manifest.labels) or isinstance(classes, str):
                return spec.name
    return None


def load_model(
    directory: Path, *, options: BackendOptions, trusted_keys: Sequence[bytes] = ()
) -> LoadedModel:
    """Verify and load an artifact directory, or raise ModelLoadError with a one-line reason."""
    try:
        manifest = load_artifact(directory)
    except ArtifactError as err:
        raise ModelLoadError(f"artifact {directory.name}: {err}") from err
    if trusted_keys:
        _verify_signature(manifest, trusted_keys)
    if manifest.format not in options.formats:
        raise ModelLoadError(
            f"{manifest.ref} is in {manifest.format} format and this device runs only "
            f"{' and '.join(options.formats)} artifacts (its profile's engine.backends)"
        )
    budget = options.memory_budget_mb
    model_file = directory / manifest.model_file
    before = (
        check_estimate(str(manifest.ref), manifest.format, model_file, budget)
        if budget is not None
        else None
    )
    session = backend_for(manifest.format).load(model_file, options)
    _check_names(manifest, session)
    model = LoadedModel(manifest=manifest, directory=directory, session=session)
    # Warm up once: the first run allocates buffers and picks kernels, so it is not timed.
    # Zeros of size 1 only fit a dynamic batch; a dynamic feature or image dimension (a model
    # kept dynamic, e.g. x[batch, 3, h, w]) is warmed up by its self-test's real inputs.
    if manifest.self_test is None or all(
        isinstance(d, int) for s in manifest.inputs for d in s.shape[1:]
    ):
        warm = {s.name: np.zeros(static_shape(s), dtype=numpy_dtype(s)) for s in manifest.inputs}
        try:
            model.infer(warm)
        except InferenceError as err:
            raise ModelLoadError(f"{manifest.ref}: warm-up run failed: {err}") from err
    run_self_test(model)
    if budget is not None:
        check_loaded(str(manifest.ref), before, budget)
    return model


def _verify_signature(manifest: Manifest, trusted_keys: Sequence[bytes]) -> None:
    from agent.signature import SignatureCheckError, verify_isolated

    try:
        verify_isolated(manifest, trusted_keys)  # in a child: cryptography stays out of here
    except SignatureCheckError as err:
        raise ModelLoadError(f"{manifest.ref}: {err}") from err


def _check_names(manifest: Manifest, session: Session) -> None:
    for kind, declared, actual in (
        ("inputs", [s.name for s in manifest.inputs], session.input_names),
        ("outputs", [s.name for s in manifest.outputs], session.output_names),
    ):
        if sorted(declared) != sorted(actual):
            raise ModelLoadError(
                f"{manifest.ref}: manifest {kind} {declared[:8]} != model {kind} {actual[:8]}"
            )
    # A model file that is not what its manifest says (e.g. an int8 file under an fp32 manifest).
    actual_types = session.dtypes()
    for spec in (*manifest.inputs, *manifest.outputs):
        actual_type = actual_types.get(spec.name)
        if actual_type is not None and actual_type != numpy_dtype(spec):
            raise ModelLoadError(
                f"{manifest.ref}: manifest says {spec.name!r} is {spec.dtype}, "
                f"the model file has {actual_type}"
            )


def run_self_test(model: LoadedModel) -> None:
    """Run the manifest's self-test; ModelLoadError on any mismatch."""
    test = model.manifest.self_test
    ref = model.manifest.ref
    if test is None:
        return
    path = model.directory / test.file
    if path.stat().st_size > MAX_SELFTEST_BYTES:
        raise ModelLoadError(f"{ref}: self-test file is larger than {MAX_SELFTEST_BYTES} bytes")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ModelLoadError(f"{ref}: unreadable self-test file: {err}") from err
    feeds = {}
    for spec in model.manifest.inputs:
        value = arrays.get(f"input/{spec.name}")
        if value is None:
            raise ModelLoadError(f"{ref}: self-test has no input/{spec.name}")
        feeds[spec.name] = value
    try:
        outputs = model.infer(feeds)
    except InferenceError as err:
        raise ModelLoadError(f"{ref}: self-test input rejected: {err}") from err
    for name in test.outputs:
        expected = arrays.get(f"output/{name}")
        if expected is None:
            raise ModelLoadError(f"{ref}: self-test has no output/{name}")
        actual = outputs[name]
        if actual.shape != expected.shape:
            raise ModelLoadError(
                f"{ref}: self-test output {name!r} shape {actual.shape} != {expected.shape}"
            )
        if not np.allclose(actual, expected, atol=test.atol, rtol=test.rtol):
            worst = float(np.max(np.abs(actual.astype(np.float64) - expected)))
            raise ModelLoadError(
                f"{ref}: self-test output {name!r} differs (max abs diff {worst:.3g}, "
                f"atol {test.atol}, rtol {test.rtol})"
            )
