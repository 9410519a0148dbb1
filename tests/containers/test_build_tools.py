"""The image tooling without podman: the base image's cache key, the wheel platforms, the
build CLI's refusals, the compose file's server settings (valid ServerSettings for both
replicas) and the agent image's entrypoint (enrol once, then run; refuse a half-given setup)."""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from containers import base, build, stack
from fleet_server.settings import ServerSettings

ENTRYPOINT = Path(build.HERE) / "agent-entrypoint.sh"


def test_base_key_follows_its_inputs_not_the_mirror() -> None:
    spec = base.BaseSpec()
    assert spec.key() == base.BaseSpec().key()
    assert spec.key() == base.BaseSpec(mirror="http://mirror.example/debian").key()
    assert spec.key() != base.BaseSpec(arch="arm64").key()
    assert spec.key() != base.BaseSpec(packages=(*spec.packages, "curl")).key()
    assert spec.key() != base.BaseSpec(suite="trixie").key()
    assert spec.tag.startswith("localhost/edgefleet-base:bookworm-amd64-")


def test_wheel_platforms_reach_every_manylinux_the_base_runs() -> None:
    tags = build.platform_tags("amd64")
    # ai-edge-litert ships manylinux_2_27 only, cryptography 2_34: pip needs each listed.
    assert {"manylinux_2_27_x86_64", "manylinux_2_34_x86_64", "manylinux2014_x86_64"} <= set(tags)
    assert "manylinux_2_37_x86_64" not in tags  # newer than bookworm's glibc 2.36
    assert all(tag.endswith("aarch64") for tag in build.platform_tags("arm64"))


def _context(root: Path, *, record: str, deps: tuple[str, ...]) -> Path:
    """A build context as :func:`build.context_for` lays it out, with a wheel holding
    ``record`` as its RECORD (written at a fresh time: zip entries carry timestamps)."""
    (root / "wheels").mkdir(parents=True, exist_ok=True)
    (root / "dist").mkdir(exist_ok=True)
    for name in deps:
        (root / "wheels" / name).write_bytes(b"")
    with zipfile.ZipFile(root / "dist" / "edgefleet-0.1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("edgefleet/__init__.py", "")
        wheel.writestr("edgefleet-0.1.0.dist-info/RECORD", record)
    return root


def test_image_key_follows_the_content_not_the_rebuild(tmp_path: Path) -> None:
    record = "edgefleet/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n"
    deps = ("numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.whl",)

    def key(context: Path, *, name: str = "agent", base_id: str = "b1", arch: str = "arm64") -> str:
        return build.image_inputs(name, context=context, base_id=base_id, arch=arch)

    first = key(_context(tmp_path / "a", record=record, deps=deps))
    # The same sources wheeled again (new zip timestamps, same RECORD): the image is kept.
    assert key(_context(tmp_path / "b", record=record, deps=deps)) == first
    changed = record.replace("47DEQ", "58EFR")
    assert key(_context(tmp_path / "c", record=changed, deps=deps)) != first
    other_numpy = ("numpy-2.4.7-cp311-cp311-manylinux_2_27_aarch64.whl",)
    assert key(_context(tmp_path / "d", record=record, deps=other_numpy)) != first
    same = tmp_path / "b"
    assert key(same, base_id="b2") != first
    assert key(same, arch="amd64") != first
    assert key(same, name="server") != first


def test_build_cli_refuses_an_unknown_arch_and_image(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--arch", "sparc64"], ["--only", "database"]):
        with pytest.raises(SystemExit) as exited:
            build.parse(argv)
        assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_without_podman_the_build_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(build.shutil, "which", lambda _name: None)
    monkeypatch.setattr(base.shutil, "which", lambda _name: None)
    assert build.main(["--work", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("images: podman is not installed: apt-get install") and "\n" == err[-1]
    with pytest.raises(base.BaseImageError, match="podman is not installed"):
        base.ensure_base()
    assert list(tmp_path.iterdir()) == []  # nothing built, nothing half-written


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*)|:\?[^}]*)?\}")


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, as podman-compose reads them."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    return value


def test_compose_replicas_have_valid_distinct_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each replica's environment read by ServerSettings as the server image reads it."""
    raw = yaml.safe_load(stack.COMPOSE_FILE.read_text())
    spec = _interpolate(
        raw,
        {
            "EDGEFLEET_OPERATOR_TOKEN": "a-token-of-sixteen-chars",
            "EDGEFLEET_MQTT_PASSWORD": "p" * 16,
        },
    )
    services = spec["services"]
    replicas = [name for name, service in services.items() if name.startswith("server-")]
    assert replicas == ["server-a", "server-b"]
    settings = []
    for name in replicas:
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        assert services[name]["restart"] == "on-failure"  # the loser of the migration race
        with monkeypatch.context() as patched:
            for key, value in env.items():
                patched.setenv(key, value)
            settings.append(ServerSettings(data_dir=tmp_path / name))
    a, b = settings
    assert a.ingest_shared_group == b.ingest_shared_group == "edgefleet-ingest"
    assert a.database_url == b.database_url and a.broker_url == b.broker_url
    assert a.replica_id != b.replica_id and a.mqtt_client_id != b.mqtt_client_id
    assert a.artifact_store.kind == "s3" and a.artifact_store == b.artifact_store
    # Both administer the broker's dynamic-security plugin as the user its start.sh makes.
    assert a.broker_dynsec and b.broker_dynsec
    broker_env = services["mosquitto"]["environment"]
    for replica in settings:
        assert replica.mqtt_username == broker_env["EDGEFLEET_MQTT_USERNAME"]
        assert replica.mqtt_password is not None
        assert replica.mqtt_password.get_secret_value() == broker_env["EDGEFLEET_MQTT_PASSWORD"]
    # Every third-party image can be swapped for its local stand-in by a variable.
    for service, variable in stack.STANDINS.items():
        assert f"${{{variable}:-" in raw["services"][service]["image"]


def _entrypoint(tmp_path: Path, env: dict[str, str]) -> tuple[int, str, list[str]]:
    """Run the agent entrypoint with a fake ``edgefleet`` on PATH that records its argv."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    fake = bindir / "edgefleet"
    # One line per call, each argument followed by '|': word splitting or globbing shows.
    fake.write_text(
        f'#!/bin/sh\nfor a in "$@"; do printf "%s|" "$a"; done >> {calls}\necho >> {calls}\n'
    )
    fake.chmod(0o755)
    done = subprocess.run(
        ["sh", str(ENTRYPOINT)],
        env={"PATH": f"{bindir}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return done.returncode, done.stderr, lines


def test_agent_entrypoint_enrols_once_then_runs(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.json"
    env = {
        "EDGEFLEET_CREDENTIALS_FILE": str(creds),
        "EDGEFLEET_ENROLLMENT_TOKEN": "enrol-me",
        "EDGEFLEET_SERVER_URL": "http://fleet:8080",
        "EDGEFLEET_DEVICE_ID": "cam-1",
        "EDGEFLEET_AGENT_CONFIG": "/cfg/agent.toml",
    }
    code, err, calls = _entrypoint(tmp_path, env)
    assert code == 0, err
    assert calls == [
        f"agent|enroll|--server|http://fleet:8080|--enrollment-token=enrol-me|--out|{creds}|"
        "--device-id|cam-1|",
        "agent|run|--config|/cfg/agent.toml|",
    ]
    creds.write_text("{}")  # enrolled: a restart only runs
    (tmp_path / "calls").unlink()
    assert _entrypoint(tmp_path, env)[2] == ["agent|run|--config|/cfg/agent.toml|"]


def test_agent_entrypoint_passes_hostile_values_as_single_arguments(tmp_path: Path) -> None:
    """Spaces, globs and command substitutions in the variables reach the CLI (which validates
    them) as one argument each, never split, expanded or run by the shell."""
    (tmp_path / "a-file").touch()  # a glob that could match
    hostile = "x y * $(touch pwned) `touch pwned`; rm -rf /"
    env = {
        "EDGEFLEET_CREDENTIALS_FILE": str(tmp_path / "credentials.json"),
        "EDGEFLEET_ENROLLMENT_TOKEN": hostile,
        "EDGEFLEET_SERVER_URL": hostile,
        "EDGEFLEET_DEVICE_ID": hostile,
        "EDGEFLEET_DEVICE_CLASS": hostile,
    }
    code, err, calls = _entrypoint(tmp_path, env)
    assert code == 0, err
    assert calls[0].split("|") == [
        "agent",
        "enroll",
        "--server",
        hostile,
        f"--enrollment-token={hostile}",
        "--out",
        str(tmp_path / "credentials.json"),
        "--device-id",
        hostile,
        "--class",
        hostile,
        "",
    ]
    assert not (tmp_path / "pwned").exists()


def test_agent_entrypoint_refuses_a_token_without_a_server(tmp_path: Path) -> None:
    env = {
        "EDGEFLEET_CREDENTIALS_FILE": str(tmp_path / "credentials.json"),
        "EDGEFLEET_ENROLLMENT_TOKEN_FILE": "/run/secrets/token",
    }
    code, err, calls = _entrypoint(tmp_path, env)
    assert code != 0 and calls == []  # neither enrols nor runs half-configured
    assert "EDGEFLEET_SERVER_URL is needed to enrol" in err
