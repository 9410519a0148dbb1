"""scikit-learn sources: hostile and malformed pickles."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from converters.api import convert
from converters.errors import InputError
from converters.options import ConvertOptions
from tests.converters.conftest import DigitsSetup
from tests.converters.factories import leftovers


def _opts(fast: dict[str, Any], **extra: Any) -> ConvertOptions:
    return ConvertOptions(**fast, **extra)


def test_garbage_and_truncated_pickles(
    digits_setup: DigitsSetup, fast_options: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "garbage.pkl").write_bytes(b"this is not a pickle at all\n" * 10)
    real = digits_setup.models["logreg"].path.read_bytes()
    (tmp_path / "truncated.joblib").write_bytes(real[: len(real) // 2])
    (tmp_path / "empty.pkl").write_bytes(b"")
    # A pickle that imports a module that does not exist.
    (tmp_path / "module.pkl").write_bytes(b"cno_such_module_xyz\nThing\n.")
    cases = {
        "garbage.pkl": "is not a readable pickle/joblib file",
        "truncated.joblib": "is not a readable pickle/joblib file",
        "empty.pkl": "is empty",
        "module.pkl": "needs Python module 'no_such_module_xyz'",
    }
    for name, message in cases.items():
        with pytest.raises(InputError, match=message) as err:
            convert(tmp_path / name, tmp_path / "out", _opts(fast_options))
        assert "\n" not in str(err.value)
        assert leftovers(tmp_path, "out") == []


def test_task_and_input_shape_must_fit_the_model(
    digits_setup: DigitsSetup, fast_options: dict[str, Any], tmp_path: Path
) -> None:
    source = digits_setup.models["logreg"].path
    with pytest.raises(InputError, match="--task regression: logreg.joblib holds a classification"):
        convert(source, tmp_path / "out", _opts(fast_options, task="regression"))
    with pytest.raises(InputError, match="the model expects \\[batch, 64\\]"):
        convert(source, tmp_path / "out", _opts(fast_options, input_shapes={"input": [1, 63]}))
    assert leftovers(tmp_path, "out") == []


def test_pickle_is_the_documented_risk() -> None:
    """The loader's docs say that pickles execute code (users must only load their own)."""
    import converters.sources.sklearn_source as sk
    from converters.cli import DESCRIPTION

    assert sk.__doc__ is not None and "runs arbitrary code" in sk.__doc__
    assert "Pickles run code" in DESCRIPTION
    assert pickle.dumps is not None
