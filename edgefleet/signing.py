"""Ed25519 signing of manifests (``cryptography``, imported when first used).

A key id is the first 16 hex digits of the SHA-256 of the raw 32-byte public key, so a device
can hold several trusted keys (for rotation) and pick the one a manifest names.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from edgefleet.contract import Manifest, Signature, signing_bytes
from edgefleet.digest import sha256

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )


class SignatureError(Exception):
    """A signature that is missing, malformed, from an untrusted key, or wrong."""


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Write a new PEM key pair (private key mode 0600) and return its key id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.write_bytes(private_pem)
    public_path.write_bytes(public_pem)
    return key_id(key.public_key())


def key_id(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256(raw).hexdigest()[:16]


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise SignatureError(f"not a PEM private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the signing key must be an Ed25519 key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as err:
        raise SignatureError(f"not a PEM public key: {err}") from err
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("trusted keys must be Ed25519 keys")
    return key


def sign_manifest(manifest: Manifest, private_pem: bytes) -> Manifest:
    """Return a copy of ``manifest`` carrying an Ed25519 signature."""
    key = load_private_key(private_pem)
    value = base64.b64encode(key.sign(signing_bytes(manifest))).decode()
    signature = Signature(key_id=key_id(key.public_key()), value=value)
    return manifest.model_copy(update={"signature": signature})


def verify_manifest(manifest: Manifest, trusted_pems: Iterable[bytes]) -> str:
    """Check the manifest's signature against trusted keys; return the key id that signed."""
    from cryptography.exceptions import InvalidSignature

    if manifest.signature is None:
        raise SignatureError("manifest is not signed")
    keys = {key_id(k): k for k in (load_public_key(p) for p in trusted_pems)}
    key = keys.get(manifest.signature.key_id)
    if key is None:
        raise SignatureError(f"manifest signed by untrusted key {manifest.signature.key_id}")
    try:
        raw = base64.b64decode(manifest.signature.value, validate=True)
        key.verify(raw, signing_bytes(manifest))
    except (binascii.Error, InvalidSignature) as err:
        raise SignatureError("manifest signature does not verify") from err
    return manifest.signature.key_id
