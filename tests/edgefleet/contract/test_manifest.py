"""The manifest: round-trips, migration rules, and rejection of malformed or hostile input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgefleet.contract import ContractError, Manifest, Signature, parse_manifest, signing_bytes
from edgefleet.contract.manifest import MAX_MANIFEST_BYTES
from tests.utils.artifacts import build_digits_artifact


@pytest.fixture(scope="module")
def manifest_dict(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    art = build_digits_artifact(tmp_path_factory.mktemp("art"))
    data: dict[str, Any] = json.loads((art / "manifest.json").read_text())
    return data


def _with(data: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**data, **changes}).encode()


def test_round_trip_is_lossless(manifest_dict: dict[str, Any]) -> None:
    manifest = parse_manifest(json.dumps(manifest_dict))
    again = parse_manifest(manifest.to_json())
    assert again == manifest
    assert again.ref.name == "digits" and again.ref.version == "1.0.0"
    assert again.inputs[0].shape == ["batch", 64]
    assert again.preprocessing is not None and again.preprocessing.layout == "flat"


def test_signing_bytes_are_canonical_and_exclude_signature(manifest_dict: dict[str, Any]) -> None:
    manifest = parse_manifest(json.dumps(manifest_dict))
    signed = manifest.model_copy(update={"signature": Signature(key_id="k", value="eA==")})
    assert signing_bytes(manifest) == signing_bytes(Manifest.model_validate(signed.model_dump()))
    # Key order in the file does not change what is signed.
    shuffled = dict(reversed(list(manifest_dict.items())))
    assert signing_bytes(parse_manifest(json.dumps(shuffled))) == signing_bytes(manifest)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"surprise": 1}, "Object contains unknown field `surprise`"),
        ({"schema_version": 99}, "newer than this EdgeFleet understands"),
        ({"schema_version": "1"}, "schema_version is missing or not an integer"),
        ({"schema_version": True}, "schema_version is missing or not an integer"),
        ({"name": "Bad Name!"}, "matching regex '^[a-z0-9][a-z0-9._-]{0,62}\\\\Z' - at `$.name`"),
        ({"name": "../../etc"}, "matching regex '^[a-z0-9][a-z0-9._-]{0,62}\\\\Z' - at `$.name`"),
        ({"version": "1.0/evil"}, "- at `$.version`"),
        ({"format": "pickle"}, "- at `$.format`"),
        ({"model_file": "other.onnx"}, "model_file"),
        ({"model_file": "selftest.npz"}, "model_file"),
        ({"inputs": []}, "Expected `array` of length >= 1 - at `$.inputs`"),
        ({"task": "astrology"}, "- at `$.task`"),
    ],
)
def test_rejects_bad_top_level_fields(
    manifest_dict: dict[str, Any], changes: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ContractError, match="manifest") as info:
        parse_manifest(_with(manifest_dict, **changes))
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "path",
    ["../model.onnx", "/etc/passwd", "a/../../b", "a\\b", "", "./x", "manifest.json", "a//b"],
)
def test_rejects_file_paths_that_escape(manifest_dict: dict[str, Any], path: str) -> None:
    files = [dict(manifest_dict["files"][0], path=path), manifest_dict["files"][1]]
    with pytest.raises(ContractError, match=r"- at `\$\.files\[0\]`"):
        parse_manifest(_with(manifest_dict, files=files))


def test_rejects_duplicate_files_and_bad_hashes(manifest_dict: dict[str, Any]) -> None:
    first = manifest_dict["files"][0]
    with pytest.raises(ContractError, match="twice"):
        parse_manifest(_with(manifest_dict, files=[first, first]))
    with pytest.raises(ContractError, match=r"- at `\$\.files\[0\]\.sha256`"):
        parse_manifest(_with(manifest_dict, files=[dict(first, sha256="XYZ")]))
    with pytest.raises(ContractError, match=r">= 0 - at `\$\.files\[0\]\.size`"):
        parse_manifest(_with(manifest_dict, files=[dict(first, size=-1)]))


def test_rejects_inconsistent_tensors_and_preprocessing(manifest_dict: dict[str, Any]) -> None:
    bad_dim = [dict(manifest_dict["inputs"][0], shape=[0, 64])]
    with pytest.raises(ContractError, match=r">= 1 - at `\$\.inputs\[0\]\.shape\[0\]`"):
        parse_manifest(_with(manifest_dict, inputs=bad_dim))
    quant = {"scale": [0.1, 0.2], "zero_point": [0]}
    with pytest.raises(ContractError, match="same length"):
        parse_manifest(
            _with(manifest_dict, inputs=[dict(bad_dim[0], shape=[1], quantization=quant)])
        )
    pre = dict(manifest_dict["preprocessing"], color="rgb", mean=[0.1, 0.2])
    with pytest.raises(ContractError, match="mean needs 1 or 3 values"):
        parse_manifest(_with(manifest_dict, preprocessing=pre))
    pre = dict(manifest_dict["preprocessing"], std=[0.0])
    with pytest.raises(ContractError, match="non-zero"):
        parse_manifest(_with(manifest_dict, preprocessing=pre))
    test = dict(manifest_dict["self_test"], outputs=["nope"])
    with pytest.raises(ContractError, match="unknown outputs"):
        parse_manifest(_with(manifest_dict, self_test=test))


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[1, 2]", b"null", b"\xff\xfe\x00", b'{"schema_version": 1}', b"{" * 5000],
)
def test_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(ContractError):
        parse_manifest(raw)


def test_rejects_oversized_before_parsing() -> None:
    raw = b'{"pad": "' + b"x" * MAX_MANIFEST_BYTES + b'"}'
    with pytest.raises(ContractError, match="limit"):
        parse_manifest(raw)


def test_every_field_is_documented_in_docs() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "contract.md").read_text()
    for field in Manifest.__struct_fields__:
        assert f"`{field}`" in doc, f"docs/contract.md does not document manifest field {field}"
