"""Artifact bundles: a round trip, and every kind of hostile or damaged bundle refused cleanly."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from edgefleet.artifact import ArtifactError, load_artifact, pack_bundle, unpack_bundle
from tests.utils.artifacts import build_digits_artifact


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return build_digits_artifact(tmp_path / "art")


def _tar(members: dict[str, bytes], *, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()


def _members(artifact: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(artifact.iterdir())}


def test_round_trip(artifact: Path, tmp_path: Path) -> None:
    bundle = pack_bundle(artifact, tmp_path / "b.tar.gz")
    again = pack_bundle(artifact, tmp_path / "b2.tar.gz")
    assert bundle.read_bytes() == again.read_bytes(), "bundles must be deterministic"
    manifest = unpack_bundle(bundle, tmp_path / "out")
    assert manifest == load_artifact(artifact)
    assert (tmp_path / "out" / "manifest.json").read_bytes() == (
        artifact / "manifest.json"
    ).read_bytes()


def _refused(raw: bytes, tmp_path: Path, fragment: str) -> None:
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(raw)
    with pytest.raises(ArtifactError, match=fragment):
        unpack_bundle(path, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".unpack-")] == []


def test_refuses_garbage_and_truncation(artifact: Path, tmp_path: Path) -> None:
    _refused(b"definitely not a tarball", tmp_path, "not a readable")
    good = pack_bundle(artifact, tmp_path / "g.tar.gz").read_bytes()
    _refused(good[: len(good) // 2], tmp_path, "corrupt or truncated|not a readable")


def test_refuses_traversal_links_and_unlisted(artifact: Path, tmp_path: Path) -> None:
    members = _members(artifact)
    _refused(_tar({**members, "../evil": b"x"}), tmp_path, "escapes")
    _refused(_tar({**members, "/abs": b"x"}), tmp_path, "escapes")
    link = tarfile.TarInfo("model.onnx")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    rest = {k: v for k, v in members.items() if k != "model.onnx"}
    _refused(_tar(rest, extra=[link]), tmp_path, "not a regular file")
    _refused(_tar({**members, "surprise.bin": b"x"}), tmp_path, "does not list")
    _refused(_tar(rest), tmp_path, "missing model.onnx")


def test_refuses_tampered_or_oversized(artifact: Path, tmp_path: Path) -> None:
    members = _members(artifact)
    tampered = bytearray(members["model.onnx"])
    tampered[-1] ^= 0xFF
    _refused(_tar({**members, "model.onnx": bytes(tampered)}), tmp_path, "sha256")
    _refused(_tar({**members, "model.onnx": members["model.onnx"] + b"x"}), tmp_path, "size")
    bad_manifest = json.loads(members["manifest.json"])
    bad_manifest["unknown"] = True
    _refused(
        _tar({**members, "manifest.json": json.dumps(bad_manifest).encode()}),
        tmp_path,
        "unknown",
    )
    path = tmp_path / "ok.tar.gz"
    path.write_bytes(_tar(members))
    with pytest.raises(ArtifactError, match="limit"):
        unpack_bundle(path, tmp_path / "dest", max_unpacked_bytes=100)


def test_refuses_gzip_bomb_member_count(artifact: Path, tmp_path: Path) -> None:
    members = _members(artifact)
    many = {**members, **{f"f{i}": b"" for i in range(300)}}
    _refused(_tar(many), tmp_path, "too many members")
    # A gzip stream that is valid but not a tar.
    _refused(gzip.compress(b"\0" * 10), tmp_path, "corrupt|not a readable|no manifest")


def test_load_artifact_detects_tampering(artifact: Path) -> None:
    (artifact / "selftest.npz").write_bytes(b"changed")
    with pytest.raises(ArtifactError, match="selftest.npz"):
        load_artifact(artifact)
    (artifact / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_artifact(artifact)
