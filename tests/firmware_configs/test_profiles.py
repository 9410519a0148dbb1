"""Device profiles: every built-in one is valid; bad ones fail with one clear line per field."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_configs.profile import ProfileError, builtin_profiles, load_profile
from tests.utils.structs import undescribed

ROOT = Path(__file__).resolve().parents[2]


def test_builtin_profiles_cover_the_device_classes() -> None:
    names = builtin_profiles()
    assert {"rpi3b-plus", "rpi4", "rpi5", "rpi-zero-2w", "x86_64", "aarch64"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.budgets.memory_mb <= profile.memory_mb


def test_every_field_is_described() -> None:
    from firmware_configs import profile

    tables = (profile.EngineProfile, profile.InputDefaults, profile.Budgets)
    assert undescribed(profile.DeviceProfile, *tables, profile.TelemetryProfile) == []


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_each_bad_field_is_named(tmp_path: Path) -> None:
    text = (ROOT / "firmware_configs/profiles/rpi4.toml").read_text()
    bad = text.replace("threads = 4", "threads = 0").replace("fps = 15", "fps = -1")
    with pytest.raises(ProfileError) as info:
        load_profile(_write(tmp_path, bad))
    message = str(info.value)
    assert "engine.threads" in message and "input.fps" in message and "\n" not in message
    with pytest.raises(ProfileError, match="exceeds cores"):
        load_profile(_write(tmp_path, text.replace("threads = 4", "threads = 8")))
    with pytest.raises(ProfileError, match="offline_queue_mb must be smaller"):
        load_profile(
            _write(tmp_path, text.replace("offline_queue_mb = 256", "offline_queue_mb = 9999"))
        )
    with pytest.raises(ProfileError, match="telemetry: Object contains unknown field `surprise`"):
        load_profile(_write(tmp_path, text + "\nsurprise = 1\n"))
    with pytest.raises(ProfileError, match=r"\(root\): Object contains unknown field `surprise`"):
        load_profile(_write(tmp_path, "surprise = 1\n" + text))
    with pytest.raises(ProfileError, match=r"name: Expected `str` matching regex"):
        load_profile(_write(tmp_path, text.replace('name = "rpi4"', 'name = "rpi4\\n"')))
    with pytest.raises(ProfileError, match=r"batch_size \(8\) exceeds input.queue_size"):
        load_profile(_write(tmp_path, text.replace("batch_size = 4", "batch_size = 8")))
    with pytest.raises(ProfileError, match="mem_pattern"):
        load_profile(
            _write(tmp_path, text.replace("[engine]", '[engine]\nmem_pattern = "sometimes"'))
        )


@pytest.mark.parametrize("text", ["not = [valid", "\x00\x01", "a = 1"])
def test_garbage_profiles(tmp_path: Path, text: str) -> None:
    with pytest.raises(ProfileError):
        load_profile(_write(tmp_path, text))


def test_unknown_missing_and_oversized(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="unknown profile 'pi9'"):
        load_profile("pi9")
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.toml")
    with pytest.raises(ProfileError, match="larger than"):
        load_profile(_write(tmp_path, "# " + "x" * 70_000))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_verifies() -> None:
    unit = ROOT / "firmware_configs/systemd/edgefleet-agent.service"
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
    )
    assert "Unknown key" not in result.stderr and "Invalid" not in result.stderr, result.stderr


def test_install_script_is_valid_bash() -> None:
    script = ROOT / "firmware_configs/install-agent.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    helped = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--profile" in helped.stdout


def test_the_units_memory_limits_come_from_the_profiles_budget() -> None:
    import configparser

    from firmware_configs.profile import systemd_memory_dropin

    for name in builtin_profiles():
        profile = load_profile(name)
        unit = configparser.ConfigParser()
        unit.read_string(systemd_memory_dropin(profile))
        high = int(unit["Service"]["MemoryHigh"].removesuffix("M"))
        top = int(unit["Service"]["MemoryMax"].removesuffix("M"))
        # The agent refuses models at the budget; systemd reclaims there and kills above.
        assert high == profile.budgets.memory_mb < top <= profile.memory_mb, name  # not over RAM
    # The drop-in is what install-agent.sh writes for --profile (the same function, by name).
    script = (ROOT / "firmware_configs/install-agent.sh").read_text()
    assert "systemd_memory_dropin(load_profile(sys.argv[1]))" in script
    assert "edgefleet-agent.service.d/memory.conf" in script
