"""scikit-learn classifiers, regressors and pipelines from ``.pkl`` / ``.joblib`` files.

**Security**: unpickling runs arbitrary code stored in the file. Only convert pickles you
produced yourself or otherwise trust; never point the converter at an uploaded pickle.

Conversion goes through skl2onnx with ``zipmap`` off, so a classifier's probabilities are a
plain ``[batch, classes]`` float tensor named ``probabilities`` next to ``label``; a regressor's
output is ``prediction``. The input is one float tensor ``input`` of ``[batch, n_features_in_]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converters.errors import ConvertError, InputError, one_line
from converters.onnx_graph import drop_outputs
from converters.options import ConvertOptions, ConvertTask
from converters.sources.base import LoadedModel

INPUT_NAME = "input"
#: Pinned so the same model converts to the same graph whatever skl2onnx's default is.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def _unpickle(path: Path) -> Any:
    import joblib

    try:
        # Trusted input only (see the module docstring): unpickling executes code.
        return joblib.load(path)
    except ModuleNotFoundError as err:
        raise InputError(
            f"{path.name}: the pickle needs Python module {err.name!r}, which is not installed"
        ) from err
    except Exception as err:  # unpickling can raise anything the file's code raises
        raise InputError(
            f"{path.name} is not a readable pickle/joblib file: {one_line(err)}"
        ) from err


def _kind(model: Any, path: Path) -> ConvertTask:
    from sklearn.base import BaseEstimator, is_classifier, is_regressor
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(model, BaseEstimator):
        raise InputError(
            f"{path.name} holds a {type(model).__name__}, not a scikit-learn estimator"
        )
    try:
        check_is_fitted(model)
    except (NotFittedError, TypeError) as err:
        raise InputError(f"{path.name}: the {type(model).__name__} is not fitted") from err
    if is_classifier(model):
        return "classification"
    if is_regressor(model):
        return "regression"
    raise InputError(
        f"{path.name}: a {type(model).__name__} is neither a classifier nor a regressor"
    )


def _n_features(model: Any, options: ConvertOptions, path: Path) -> int:
    given = options.input_shapes.get(INPUT_NAME)
    n = getattr(model, "n_features_in_", None)
    if isinstance(n, int) and n > 0:
        if given is not None and (len(given) != 2 or given[1] != n):
            raise InputError(f"--input-shape {INPUT_NAME}: the model expects [batch, {n}]")
        return n
    if given is not None and len(given) == 2:
        return given[1]
    raise InputError(
        f"{path.name}: the model has no n_features_in_; pass --input-shape {INPUT_NAME}=1,N"
    )


class SklearnLoader:
    """Pickled scikit-learn estimators (trusted files only)."""

    kind: str = "sklearn"
    suffixes: tuple[str, ...] = (".pkl", ".pickle", ".joblib")
    modules: tuple[str, ...] = ("sklearn", "skl2onnx", "joblib")

    def load(self, path: Path, *, options: ConvertOptions) -> LoadedModel:
        import numpy as np
        import sklearn

        model = _unpickle(path)
        kind = _kind(model, path)
        if options.task is not None and options.task not in (kind, "raw"):
            raise InputError(f"--task {options.task}: {path.name} holds a {kind} model")
        n_features = _n_features(model, options, path)
        onnx_model = _to_onnx(model, kind=kind, n_features=n_features)

        notes: list[str] = []
        labels: list[str] = []
        class_values = None
        compare_label = True
        if kind == "classification":
            class_values = np.asarray(model.classes_)
            labels = [str(c) for c in class_values.tolist()]
            if class_values.dtype.kind not in "iub":
                # A string 'label' tensor has no contract dtype; labels[] carries the names.
                drop_outputs(onnx_model, {"label"})
                compare_label = False
                notes.append("non-integer classes: 'label' output dropped, use labels[argmax]")

        def reference(feeds: Mapping[str, Any]) -> dict[str, Any]:
            x = feeds[INPUT_NAME]
            with warnings.catch_warnings():
                # Fitted on a DataFrame, predicting on an array: the values are what matter.
                warnings.filterwarnings("ignore", message="X does not have valid feature names")
                if kind == "regression":
                    return {"prediction": np.asarray(model.predict(x))}
                out: dict[str, Any] = {}
                if compare_label:
                    out["label"] = np.asarray(model.predict(x))
                if hasattr(model, "predict_proba"):
                    out["probabilities"] = np.asarray(model.predict_proba(x))
                return out

        import skl2onnx

        return LoadedModel(
            framework="sklearn",
            onnx_model=onnx_model,
            reference=reference,
            task=options.task or kind,
            framework_version=sklearn.__version__,
            labels=labels,
            class_values=class_values,
            tools={"skl2onnx": skl2onnx.__version__},
            notes=notes,
        )


def _to_onnx(model: Any, *, kind: ConvertTask, n_features: int) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    try:
        if kind == "classification":
            return convert_sklearn(
                model,
                initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
                options={id(model): {"zipmap": False}},
                target_opset=TARGET_OPSET,
            )
        n_targets = int(getattr(model, "n_outputs_", 1) or 1)
        return convert_sklearn(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            final_types=[("prediction", FloatTensorType([None, n_targets]))],
            target_opset=TARGET_OPSET,
        )
    except Exception as err:  # skl2onnx raises many unrelated types for unsupported models
        raise ConvertError(
            f"skl2onnx cannot convert {type(model).__name__}: {one_line(err)}"
        ) from err
