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
    if manifest.signature is None:
        raise SignatureError("manifest is not signed")
    return verify_bytes(signing_bytes(manifest), manifest.signature, trusted_pems)


def verify_bytes(message: bytes, signature: Signature, trusted_pems: Iterable[bytes]) -> str:
    """Check ``signature`` over ``message`` (a manifest's :func:`signing_bytes`) against trusted
    keys; return the key id that signed. The agent runs it in a child (agent.signature)."""
    from cryptography.exceptions import InvalidSignature

    keys = {key_id(k): k for k in (load_public_key(p) for p in trusted_pems)}
    key = keys.get(signature.key_id)
    if key is None:
        raise SignatureError(f"manifest signed by untrusted key {signature.key_id}")
    try:
        raw = base64.b64decode(signature.value, validate=True)
        key.verify(raw, message)
    except (binascii.Error, InvalidSignature) as err:
        raise SignatureError("manifest signature does not verify") from err
    return signature.key_id


#: DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
#: 1.3.101.112 }, BIT STRING (33 bytes, no unused bits) }, then the 32-byte key.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def check_public_key_pem(pem: bytes) -> None:
    """The checks :func:`load_public_key` makes on a trusted key's form (one PEM public key,
    Ed25519), with the standard library only: the agent checks its keys at start without
    importing ``cryptography`` (7.6 MB it would hold for its life; it verifies in a child)."""
    text = pem.decode("ascii", errors="replace").strip()
    begin, end = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
    if not (text.startswith(begin) and text.endswith(end)):
        raise SignatureError("not a PEM public key")
    body = "".join(text[len(begin) : -len(end)].split())
    try:
        der = base64.b64decode(body, validate=True)
    except binascii.Error as err:
        raise SignatureError(f"not a PEM public key: {err}") from err
    if len(der) != len(_ED25519_SPKI_PREFIX) + 32 or not der.startswith(_ED25519_SPKI_PREFIX):
        raise SignatureError("trusted keys must be Ed25519 keys")
