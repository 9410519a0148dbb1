"""Converter fixtures: three scikit-learn models trained on digits once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from tests.converters.factories import digits, write_npz

TRAIN_ROWS = 1400


@dataclass(frozen=True)
class Trained:
    name: str
    model: Any
    path: Path


@dataclass(frozen=True)
class DigitsSetup:
    models: dict[str, Trained]
    eval_npz: Path
    x_eval: np.ndarray
    y_eval: np.ndarray
    work: Path


@pytest.fixture(scope="session")
def digits_setup(tmp_path_factory: pytest.TempPathFactory) -> DigitsSetup:
    """LogisticRegression, RandomForest and Pipeline(StandardScaler, LogisticRegression)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    work = tmp_path_factory.mktemp("digits")
    x, y = digits()
    estimators = {
        "logreg": LogisticRegression(max_iter=2000),
        "forest": RandomForestClassifier(n_estimators=40, random_state=0),
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    }
    models = {}
    for name, estimator in estimators.items():
        estimator.fit(x[:TRAIN_ROWS], y[:TRAIN_ROWS])
        path = work / f"{name}.joblib"
        joblib.dump(estimator, path)
        models[name] = Trained(name=name, model=estimator, path=path)
    x_eval, y_eval = x[TRAIN_ROWS:], y[TRAIN_ROWS:]
    eval_npz = write_npz(work / "eval.npz", x=x_eval, y=y_eval)
    return DigitsSetup(models=models, eval_npz=eval_npz, x_eval=x_eval, y_eval=y_eval, work=work)


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    key_id: str


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    from edgefleet.signing import generate_keypair

    folder = tmp_path_factory.mktemp("keys")
    key_id = generate_keypair(folder / "signing.pem", folder / "signing.pub.pem")
    return KeyPair(private=folder / "signing.pem", public=folder / "signing.pub.pem", key_id=key_id)


@pytest.fixture(scope="session")
def fast_options() -> dict[str, Any]:
    """ConvertOptions fields that keep latency measurement short in tests."""
    return {"latency_warmup": 3, "latency_runs": 20}


@dataclass(frozen=True)
class CnnSetup:
    """A small PyTorch CNN trained on digits 28×28, saved as TorchScript, with data files."""

    torchscript: Path
    net: Any
    calib_npz: Path
    eval_npz: Path
    x_eval: np.ndarray
    y_eval: np.ndarray
    work: Path


@pytest.fixture(scope="session")
def cnn_setup(tmp_path_factory: pytest.TempPathFactory) -> CnnSetup:
    pytest.importorskip("torch", reason="the PyTorch CNN needs the convert-torch extra")
    import torch

    from tests.converters.factories import digits_28, train_cnn

    work = tmp_path_factory.mktemp("cnn")
    x, y = digits_28()
    net = train_cnn(x[:TRAIN_ROWS], y[:TRAIN_ROWS], epochs=3)
    path = work / "cnn.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    calib = write_npz(work / "calib.npz", x=x[:256], y=y[:256])
    x_eval, y_eval = x[TRAIN_ROWS:], y[TRAIN_ROWS:]
    eval_npz = write_npz(work / "eval.npz", x=x_eval, y=y_eval)
    return CnnSetup(path, net, calib, eval_npz, x_eval, y_eval, work)
