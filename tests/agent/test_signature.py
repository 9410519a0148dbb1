"""agent.signature: a model's signature is checked in a child, cryptography never loaded here."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.signature import SignatureCheckError, verify_isolated
from edgefleet.artifact import read_manifest
from edgefleet.signing import generate_keypair, sign_manifest

ROOT = Path(__file__).resolve().parents[2]


def _signed(artifact: Path, tmp_path: Path) -> tuple[bytes, str]:
    kid = generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    signed = sign_manifest(read_manifest(artifact), (tmp_path / "k.pem").read_bytes())
    (artifact / "manifest.json").write_text(signed.to_json())
    return (tmp_path / "k.pub").read_bytes(), kid


def test_the_child_verifies_and_refuses_as_verify_manifest(
    artifact_copy: Path, tmp_path: Path
) -> None:
    public, kid = _signed(artifact_copy, tmp_path)
    signed = read_manifest(artifact_copy)
    assert verify_isolated(signed, [public]) == kid
    generate_keypair(tmp_path / "o.pem", tmp_path / "o.pub")
    with pytest.raises(SignatureCheckError, match=f"untrusted key {kid}"):
        verify_isolated(signed, [(tmp_path / "o.pub").read_bytes()])
    # what the parent parsed is what is checked: a field changed after signing fails
    with pytest.raises(SignatureCheckError, match="does not verify"):
        verify_isolated(signed.model_copy(update={"version": "9.9.9"}), [public])
    with pytest.raises(SignatureCheckError, match="not signed"):
        verify_isolated(signed.model_copy(update={"signature": None}), [public])


def test_a_child_that_cannot_answer_is_a_refusal(artifact_copy: Path, tmp_path: Path) -> None:
    public, _ = _signed(artifact_copy, tmp_path)
    with pytest.raises(SignatureCheckError, match="did not run"):
        verify_isolated(read_manifest(artifact_copy), [public], timeout_s=0.001)
    with pytest.raises(SignatureCheckError, match="failed: .*Error"):
        verify_isolated(read_manifest(artifact_copy), [b"\xff not ascii"])


def test_loading_a_signed_model_keeps_cryptography_out_of_the_agent(
    artifact_copy: Path, tmp_path: Path
) -> None:
    public, _ = _signed(artifact_copy, tmp_path)
    (tmp_path / "k.pub").write_bytes(public)
    code = f"""
        import sys
        from pathlib import Path
        from agent.engine import BackendOptions, load_model
        from agent.signature import read_trusted_keys
        keys = read_trusted_keys([Path({str(tmp_path / "k.pub")!r})])
        model = load_model(Path({str(artifact_copy)!r}), options=BackendOptions(threads=1),
                           trusted_keys=keys)
        maps = open("/proc/self/maps").read()
        print(model.ref, "cryptography" in sys.modules, "_rust.abi3" in maps)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["digits@1.0.0", "False", "False"]
