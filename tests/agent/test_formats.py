"""Artifact formats a device runs (its profile's engine.backends): a 32-bit ARM board runs
LiteRT models only, and an ONNX artifact there fails with one clear line, not an ImportError."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.engine import BackendOptions, load_model
from agent.errors import ModelLoadError
from firmware_configs.profile import load_profile
from tests.agent.test_config import BASE


def test_the_armv7_profile_runs_tflite_only_and_names_the_device_class() -> None:
    profile = load_profile("rpi-armv7")
    assert profile.arch == "armv7l" and profile.engine.backends == ["tflite"]
    config = parse_config('profile = "rpi-armv7"\n' + BASE)
    assert config.engine.backends == ["tflite"] and config.device_class == "rpi-armv7"
    # No profile: both formats; a class set in the file wins over the profile's name.
    assert parse_config(BASE).engine.backends == ["onnx", "tflite"]
    mine = parse_config('profile = "rpi-armv7"\ndevice_class = "lab-pi"\n' + BASE)
    assert mine.device_class == "lab-pi"
    for bad in ("[]", '["onnx", "pytorch"]', '"tflite"'):
        with pytest.raises(Exception, match="engine.backends"):
            parse_config(BASE + f"[engine]\nbackends = {bad}\n")


def test_an_onnx_artifact_on_a_tflite_only_device_is_a_load_error(digits_v1: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_model(digits_v1, options=BackendOptions(formats=("tflite",)))
    assert str(caught.value) == (
        "digits@1.0.0 is in onnx format and this device runs only tflite artifacts "
        "(its profile's engine.backends)"
    )
    assert load_model(digits_v1, options=BackendOptions()).manifest.format == "onnx"


def test_an_onnx_artifact_without_onnxruntime_names_what_is_missing(
    digits_v1: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime → ImportError
    with pytest.raises(ModelLoadError, match="no 'onnxruntime' .*armv7l.*serve a .tflite"):
        load_model(digits_v1, options=BackendOptions())
