"""Ed25519 signatures over manifests: sign, verify, rotate, and refuse forgeries."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.artifact import load_artifact
from edgefleet.signing import SignatureError, generate_keypair, sign_manifest, verify_manifest
from tests.utils.artifacts import build_digits_artifact


def _keys(tmp_path: Path, name: str) -> tuple[bytes, bytes, str]:
    kid = generate_keypair(tmp_path / f"{name}.pem", tmp_path / f"{name}.pub")
    return (tmp_path / f"{name}.pem").read_bytes(), (tmp_path / f"{name}.pub").read_bytes(), kid


def test_sign_verify_and_rotation(tmp_path: Path) -> None:
    manifest = load_artifact(build_digits_artifact(tmp_path / "a"))
    old_priv, old_pub, old_id = _keys(tmp_path, "old")
    new_priv, new_pub, new_id = _keys(tmp_path, "new")
    assert (tmp_path / "old.pem").stat().st_mode & 0o777 == 0o600
    signed = sign_manifest(manifest, new_priv)
    assert signed.signature is not None and signed.signature.key_id == new_id
    assert verify_manifest(signed, [old_pub, new_pub]) == new_id
    assert verify_manifest(sign_manifest(manifest, old_priv), [old_pub, new_pub]) == old_id


def test_forgeries_are_refused(tmp_path: Path) -> None:
    manifest = load_artifact(build_digits_artifact(tmp_path / "a"))
    priv, pub, _ = _keys(tmp_path, "k")
    _, other_pub, _ = _keys(tmp_path, "other")
    signed = sign_manifest(manifest, priv)
    with pytest.raises(SignatureError, match="not signed"):
        verify_manifest(manifest, [pub])
    with pytest.raises(SignatureError, match="untrusted key"):
        verify_manifest(signed, [other_pub])
    tampered = signed.model_copy(update={"version": "9.9.9"})
    with pytest.raises(SignatureError, match="does not verify"):
        verify_manifest(tampered, [pub])
    assert signed.signature is not None
    garbage = signed.model_copy(
        update={"signature": signed.signature.model_copy(update={"value": "!!notbase64"})}
    )
    with pytest.raises(SignatureError, match="does not verify"):
        verify_manifest(garbage, [pub])
    with pytest.raises(SignatureError, match="PEM"):
        verify_manifest(signed, [b"not a key"])
    with pytest.raises(SignatureError, match="PEM private key"):
        sign_manifest(manifest, b"garbage")


def test_the_stdlib_key_check_accepts_what_cryptography_loads(tmp_path: Path) -> None:
    """check_public_key_pem (the agent's start, no cryptography) against load_public_key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448

    from edgefleet.signing import check_public_key_pem, load_public_key

    priv, pub, _ = _keys(tmp_path, "k")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    others = {
        "ec": ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(pem, spki),
        "ed448": ed448.Ed448PrivateKey.generate().public_key().public_bytes(pem, spki),
    }
    check_public_key_pem(pub)
    check_public_key_pem(b"\n" + pub.replace(b"\n", b"\r\n") + b"\n")  # line endings, padding
    load_public_key(b"\n" + pub.replace(b"\n", b"\r\n") + b"\n")
    for key in others.values():
        for check in (check_public_key_pem, load_public_key):
            with pytest.raises(SignatureError, match="must be Ed25519 keys"):
                check(key)
    body = pub.split(b"\n")[1]
    for bad in (priv, b"not a key", pub.replace(body, body[:-4]), pub.replace(body, b"!!!!")):
        with pytest.raises(SignatureError):
            check_public_key_pem(bad)
        with pytest.raises(SignatureError):
            load_public_key(bad)
