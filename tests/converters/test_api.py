"""End-to-end conversions of real scikit-learn models through ``converters.api.convert``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from converters.api import convert, default_name
from converters.errors import ConvertError, InputError
from converters.options import ConvertOptions
from edgefleet.artifact import hash_file, load_artifact, pack_bundle, unpack_bundle
from edgefleet.contract import Preprocessing
from edgefleet.signing import SignatureError, generate_keypair, verify_manifest
from tests.converters.conftest import DigitsSetup, KeyPair
from tests.converters.factories import leftovers, write_pickle

MODELS = ["logreg", "forest", "pipeline"]


def _options(fast: dict[str, Any], **extra: Any) -> ConvertOptions:
    return ConvertOptions(**fast, **extra)


@pytest.mark.parametrize("model_name", MODELS)
def test_sklearn_conversion_matches_sklearn(
    model_name: str,
    digits_setup: DigitsSetup,
    signing_keys: KeyPair,
    fast_options: dict[str, Any],
    tmp_path: Path,
) -> None:
    trained = digits_setup.models[model_name]
    out = tmp_path / "artifact"
    result = convert(
        trained.path,
        out,
        _options(
            fast_options,
            name=f"digits-{model_name}",
            version="1.2.3",
            eval_data=digits_setup.eval_npz,
            sign_key=signing_keys.private,
        ),
    )
    manifest = result.manifest
    assert result.artifact_dir == out
    assert (manifest.name, manifest.version, manifest.format, manifest.precision) == (
        f"digits-{model_name}",
        "1.2.3",
        "onnx",
        "fp32",
    )
    assert manifest.task == "classification"
    assert manifest.labels == [str(i) for i in range(10)]
    assert [(t.name, t.shape, t.dtype) for t in manifest.inputs] == [
        ("input", ["batch", 64], "float32")
    ]
    assert [(t.name, t.shape, t.dtype) for t in manifest.outputs] == [
        ("label", ["batch"], "int64"),
        ("probabilities", ["batch", 10], "float32"),
    ]
    assert manifest.source.framework == "sklearn"
    assert manifest.source.original_file == f"{model_name}.joblib"
    assert {"onnx", "onnxruntime", "skl2onnx", "numpy"} <= set(manifest.source.tools)

    # Every listed file is on disk with the listed hash; the manifest on disk is the result.
    for entry in manifest.files:
        assert hash_file(out / entry.path) == (entry.sha256, entry.size)
    assert {f.path: f.role for f in manifest.files} == {
        "model.onnx": "model",
        "selftest.npz": "selftest",
        "report.json": "extra",
    }
    assert load_artifact(out) == manifest

    # Top-1 equals scikit-learn's own on the same rows (within half a point).
    sk_top1 = float(np.mean(trained.model.predict(digits_setup.x_eval) == digits_setup.y_eval))
    assert manifest.metrics.top1 is not None
    assert abs(manifest.metrics.top1 - sk_top1) <= 0.005
    assert manifest.metrics.top1 > 0.8
    assert manifest.metrics.eval_samples == len(digits_setup.y_eval)
    assert manifest.metrics.threads == 1
    assert manifest.metrics.latency_ms_p50 is not None and manifest.metrics.latency_ms_p50 > 0
    assert manifest.metrics.latency_ms_p95 is not None
    assert manifest.metrics.latency_ms_p95 >= manifest.metrics.latency_ms_p50
    assert manifest.metrics.extra["fidelity.probabilities.argmax_agreement"] == 1.0

    # Reference statistics describe the eval set and the predicted classes.
    stats = manifest.reference_stats
    assert stats is not None and stats.samples == len(digits_setup.y_eval)
    np.testing.assert_allclose(stats.channel_mean, digits_setup.x_eval.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(
        stats.channel_std, digits_setup.x_eval.std(axis=0), rtol=1e-4, atol=1e-6
    )
    assert len(stats.output_distribution) == 10
    assert sum(stats.output_distribution) == pytest.approx(1.0)
    assert all(sum(h) == stats.samples for h in stats.channel_histograms)

    # The self-test reproduces with a fresh onnxruntime session, as a device would run it.
    assert manifest.self_test is not None
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with np.load(out / "selftest.npz", allow_pickle=False) as data:
        feeds = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("input/")}
        assert set(feeds) == {"input"} and len(feeds["input"]) == 4
        got = dict(
            zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True)
        )
        for name in manifest.self_test.outputs:
            np.testing.assert_allclose(
                got[name],
                data[f"output/{name}"],
                atol=manifest.self_test.atol,
                rtol=manifest.self_test.rtol,
            )
        # The stored outputs are the model's, and the model's are scikit-learn's.
        np.testing.assert_array_equal(data["output/label"], trained.model.predict(feeds["input"]))

    # The signature verifies with the public key, and with no other key.
    assert verify_manifest(manifest, [signing_keys.public.read_bytes()]) == signing_keys.key_id
    other = generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    assert other != signing_keys.key_id
    with pytest.raises(SignatureError):
        verify_manifest(manifest, [(tmp_path / "other.pub").read_bytes()])

    # The report is the one listed, with the checks' numbers.
    report = json.loads((out / "report.json").read_text())
    assert report["source"]["sha256"] == hash_file(trained.path)[0]
    assert {c["name"]: c["passed"] for c in report["checks"]} == {"fidelity": True, "top1": True}
    assert manifest.build.report_file == "report.json"
    assert manifest.build.config["eval_sha256"] == hash_file(digits_setup.eval_npz)[0]

    # The artifact round-trips through a bundle.
    bundle = pack_bundle(out, tmp_path / "bundle.tar.gz")
    assert unpack_bundle(bundle, tmp_path / "unpacked") == manifest
    assert leftovers(tmp_path, "artifact") == ["artifact"]


def test_synthetic_inputs_without_eval(
    digits_setup: DigitsSetup, fast_options: dict[str, Any], tmp_path: Path
) -> None:
    result = convert(
        digits_setup.models["forest"].path,
        tmp_path / "a",
        _options(fast_options, synthetic_samples=32),
    )
    m = result.manifest
    assert m.metrics.top1 is None and m.metrics.eval_samples is None
    assert m.reference_stats is None
    assert m.signature is None
    assert result.report.eval.synthetic and result.report.eval.samples == 32
    assert m.name == "forest"
    assert [c.name for c in result.report.checks if c.skipped] == ["top1"]


def test_regressor_and_string_classes(
    digits_setup: DigitsSetup, fast_options: dict[str, Any], tmp_path: Path
) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression, Ridge

    x, y = digits_setup.x_eval, digits_setup.y_eval
    ridge = Ridge().fit(x, y.astype(np.float64))
    joblib.dump(ridge, tmp_path / "ridge.pkl")
    result = convert(tmp_path / "ridge.pkl", tmp_path / "r", _options(fast_options))
    assert result.manifest.task == "regression"
    assert [(t.name, t.shape) for t in result.manifest.outputs] == [("prediction", ["batch", 1])]
    assert result.manifest.labels == []
    with pytest.raises(
        InputError, match="--labels needs a classifier, detector or segmenter; this is r"
    ):
        convert(tmp_path / "ridge.pkl", tmp_path / "r2", _options(fast_options, labels=["a"]))

    words = np.array(["even", "odd"])[y % 2]
    clf = LogisticRegression(max_iter=2000).fit(x, words)
    joblib.dump(clf, tmp_path / "words.pkl")
    eval_npz = tmp_path / "words.npz"
    np.savez(eval_npz, x=x, y=words)
    result = convert(
        tmp_path / "words.pkl", tmp_path / "w", _options(fast_options, eval_data=eval_npz)
    )
    assert result.manifest.labels == ["even", "odd"]
    assert [t.name for t in result.manifest.outputs] == ["probabilities"]
    assert result.manifest.metrics.top1 == pytest.approx(clf.score(x, words), abs=0.005)
    assert any("label" in note for note in result.report.notes)


def test_labels_preprocessing_and_force(
    digits_setup: DigitsSetup, fast_options: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "art"
    source = digits_setup.models["logreg"].path
    names = [f"digit-{i}" for i in range(10)]
    pre = Preprocessing(color="gray", scale=16 / 255, layout="flat")
    first = convert(source, out, _options(fast_options, labels=names, preprocessing=pre))
    assert first.manifest.labels == names and first.manifest.preprocessing == pre

    with pytest.raises(InputError, match="already exists; pass --force"):
        convert(source, out, _options(fast_options, version="2"))
    assert load_artifact(out) == first.manifest

    second = convert(source, out, _options(fast_options, version="2", force=True))
    assert load_artifact(out).version == "2" == second.manifest.version
    assert leftovers(tmp_path, "art") == ["art"]

    with pytest.raises(InputError, match="3 labels given but the model scores \\[10\\]"):
        convert(source, tmp_path / "x", _options(fast_options, labels=["a", "b", "c"]))
    assert leftovers(tmp_path, "x") == []


def test_force_never_replaces_a_non_artifact(
    digits_setup: DigitsSetup, fast_options: dict[str, Any], tmp_path: Path
) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="holds no manifest.json; refusing"):
        convert(digits_setup.models["logreg"].path, precious, _options(fast_options, force=True))
    assert (precious / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        convert(digits_setup.models["logreg"].path, a_file, _options(fast_options, force=True))


def test_broken_fidelity_fails_and_leaves_nothing(
    digits_setup: DigitsSetup,
    fast_options: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An ONNX graph that is not the source model's must be caught by the fidelity check."""
    import converters.sources.sklearn_source as sk

    real = sk._to_onnx
    forest = digits_setup.models["forest"].model

    def wrong_model(model: Any, **kwargs: Any) -> Any:
        return real(forest, **kwargs)

    good = convert(digits_setup.models["logreg"].path, tmp_path / "kept", _options(fast_options))
    monkeypatch.setattr(sk, "_to_onnx", wrong_model)
    with pytest.raises(ConvertError, match="fidelity broken") as err:
        convert(
            digits_setup.models["logreg"].path,
            tmp_path / "bad",
            _options(fast_options, eval_data=digits_setup.eval_npz),
        )
    assert not isinstance(err.value, InputError)
    assert leftovers(tmp_path, "bad") == []
    # With --force, a failed conversion leaves the previous artifact untouched.
    with pytest.raises(ConvertError, match="fidelity broken"):
        convert(
            digits_setup.models["logreg"].path,
            tmp_path / "kept",
            _options(fast_options, force=True, version="9"),
        )
    assert load_artifact(tmp_path / "kept") == good.manifest
    assert leftovers(tmp_path, "kept") == ["kept"]


def test_non_model_pickle_and_unfitted_estimator(
    fast_options: dict[str, Any], tmp_path: Path
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    cases = {
        "dict.pkl": ({"weights": [1, 2, 3]}, "holds a dict, not a scikit-learn estimator"),
        "unfitted.pkl": (LogisticRegression(), "is not fitted"),
        "scaler.pkl": (
            StandardScaler().fit(np.ones((3, 2))),
            "neither a classifier nor a regressor",
        ),
    }
    for file, (obj, message) in cases.items():
        write_pickle(tmp_path / file, obj)
        with pytest.raises(InputError, match=message):
            convert(tmp_path / file, tmp_path / "out", _options(fast_options))
        assert leftovers(tmp_path, "out") == []


def test_default_name_is_a_valid_model_name() -> None:
    assert default_name(Path("My Model v2.pkl")) == "my-model-v2"
    assert default_name(Path("__.pkl")) == "model"
    assert len(default_name(Path("a" * 300 + ".pkl"))) == 63
