"""The wire format did not change when the contract moved from pydantic to msgspec.

The expected bytes in ``tests/fixtures/contract`` were written by the pydantic contract; an
artifact signed then must still verify, and devices and servers of both kinds must interoperate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgefleet.contract import (
    Channel,
    ContractError,
    Manifest,
    Result,
    Telemetry,
    decode,
    encode,
    parse_manifest,
    signing_bytes,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "contract"


def _read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _public_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_signing_bytes_are_those_of_the_pydantic_contract() -> None:
    manifest = parse_manifest(_read("manifest.in.json"))
    assert signing_bytes(manifest) == _read("manifest.signing-bytes")


def test_a_manifest_signed_by_the_pydantic_contract_still_verifies() -> None:
    from edgefleet.signing import SignatureError, verify_manifest

    manifest = parse_manifest(_read("manifest.in.json"))
    assert verify_manifest(manifest, [_public_pem()]) == "56475aa75463474c"
    tampered = manifest.model_copy(update={"labels": [*manifest.labels[:-1], "x"]})
    with pytest.raises(SignatureError, match="does not verify"):
        verify_manifest(tampered, [_public_pem()])


def test_manifest_json_is_that_of_the_pydantic_contract() -> None:
    manifest = parse_manifest(_read("manifest.in.json"))
    # The one difference: floats >= 1e16 keep their exponent without '+' (both are valid JSON
    # and parse to the same float; signing_bytes use Python's json and are unaffected).
    expected = _read("manifest.out.json").decode().replace('"big": 1e+20', '"big": 1e20')
    assert manifest.to_json() == expected
    assert parse_manifest(manifest.to_json()) == manifest


@pytest.mark.parametrize(
    ("channel", "name"), [(Channel.TELEMETRY, "telemetry"), (Channel.RESULTS, "result")]
)
def test_payload_bytes_are_those_of_the_pydantic_contract(channel: Channel, name: str) -> None:
    payload = decode(channel, _read(f"{name}.in.json"))
    assert encode(payload) == _read(f"{name}.out.json")


def test_built_in_python_encodes_like_decoded() -> None:
    """Construction converts like decoding does: nested dicts, ints in float fields."""
    data: dict[str, Any] = json.loads(_read("telemetry.in.json"))
    built = Telemetry(**{k: v for k, v in data.items() if k != "ts"}, ts=data["ts"])
    assert encode(built) == _read("telemetry.out.json")
    result = Result(**json.loads(_read("result.in.json")))
    assert encode(result) == _read("result.out.json")
    manifest = Manifest(**json.loads(_read("manifest.in.json")))
    assert signing_bytes(manifest) == _read("manifest.signing-bytes")


def test_construction_validates_like_decoding() -> None:
    data: dict[str, Any] = json.loads(_read("telemetry.in.json"))
    with pytest.raises(
        ContractError, match=r"invalid Telemetry: Expected `int` >= 0 - at `\$.seq`"
    ):
        Telemetry(**{**data, "seq": -1})
    with pytest.raises(
        ContractError, match=r"Expected `str` matching regex .* - at `\$.model.name`"
    ):
        Telemetry(**{**data, "model": {"name": "Bad Name", "version": "1"}})
    manifest = parse_manifest(_read("manifest.in.json"))
    with pytest.raises(ContractError, match=r"^invalid Manifest: files lists a path twice$"):
        manifest.model_copy(update={"files": [manifest.files[0], manifest.files[0]]})


def test_the_light_modules_do_not_import_pydantic() -> None:
    code = (
        "import sys, edgefleet.contract, edgefleet.artifact, edgefleet.signing, edgefleet.mqtt, "
        "edgefleet.mqtt_tls, edgefleet.logs; "
        "assert 'pydantic' not in sys.modules, sorted(m for m in sys.modules if 'pydantic' in m)"
    )
    root = Path(__file__).parents[3]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
