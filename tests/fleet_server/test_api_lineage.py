"""Model lineage: parent, data set hash and training ref given at upload, the converter report
kept from the bundle, and the parent chain (validated, cycle-safe, depth-bounded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, update

from edgefleet.artifact import hash_file, pack_bundle
from fleet_server.models import ModelVersion
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import operator, upload
from tests.utils.artifacts import build_digits_artifact

pytestmark = pytest.mark.integration

DATASET = "ab" * 32


def _bundle(tmp_path: Path, version: str, report: bytes | None = None) -> Path:
    artifact = build_digits_artifact(tmp_path / f"a-{version}", version=version)
    if report is not None:
        (artifact / "report.json").write_bytes(report)
        manifest = json.loads((artifact / "manifest.json").read_text())
        sha, size = hash_file(artifact / "report.json")
        manifest["files"].append(
            {"path": "report.json", "sha256": sha, "size": size, "role": "extra"}
        )
        manifest["build"]["report_file"] = "report.json"
        (artifact / "manifest.json").write_text(json.dumps(manifest))
    return pack_bundle(artifact, tmp_path / f"b-{version}.tar.gz")


def _push(client: TestClient, bundle: Path, **params: str) -> Any:
    files = {"bundle": ("m.tar.gz", bundle.read_bytes(), "application/gzip")}
    return client.post("/api/v1/models", params=params, files=files, headers=operator())


def test_lineage_is_recorded_and_chained(app: tuple[TestClient, Runtime], tmp_path: Path) -> None:
    client, runtime = app
    report = {"stages": {"convert_s": 1.5}, "chosen": "fp32"}
    assert upload(client, _bundle(tmp_path, "1.0.0")).status_code == 201
    second = _push(
        client,
        _bundle(tmp_path, "1.1.0", json.dumps(report).encode()),
        parent="1.0.0",
        dataset_sha256=DATASET.upper(),
        training_ref="git:0123abc",
    )
    assert second.status_code == 201, second.text
    body = second.json()
    assert body["parent_version"] == "1.0.0" and body["dataset_sha256"] == DATASET
    assert body["training_ref"] == "git:0123abc" and body["converter_report"] == report
    third = _push(client, _bundle(tmp_path, "1.2.0"), parent="1.1.0")
    assert third.status_code == 201, third.text

    shown = client.get("/api/v1/models/digits/1.1.0", headers=operator()).json()
    assert shown["converter_report"] == report
    listed = client.get("/api/v1/models", headers=operator()).json()
    assert all(m["converter_report"] is None and m["manifest"] is None for m in listed)

    lineage = client.get("/api/v1/models/digits/1.2.0/lineage", headers=operator())
    assert lineage.status_code == 200, lineage.text
    data = lineage.json()
    assert [e["version"] for e in data["chain"]] == ["1.2.0", "1.1.0", "1.0.0"]
    assert data["truncated"] is False
    assert data["chain"][1]["has_converter_report"] and data["chain"][1]["training_ref"]
    assert client.get("/api/v1/models/digits/9/lineage", headers=operator()).status_code == 404
    assert client.get("/api/v1/models/digits/1.2.0/lineage").status_code == 401

    # A cycle written straight into the database (the API cannot make one) ends the walk.
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        session.exec(
            update(ModelVersion)
            .where(col(ModelVersion.version) == "1.0.0")
            .values(parent_version="1.2.0")
        )
        session.commit()
    cyclic = client.get("/api/v1/models/digits/1.2.0/lineage", headers=operator()).json()
    assert [e["version"] for e in cyclic["chain"]] == ["1.2.0", "1.1.0", "1.0.0"]
    assert cyclic["truncated"] is True


def test_lineage_depth_is_bounded(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        for i in range(120):
            session.add(
                ModelVersion(
                    name="deep",
                    version=f"v{i}",
                    format="onnx",
                    precision="fp32",
                    task="raw",
                    sha256="0" * 64,
                    size=1,
                    signed=False,
                    storage_key=f"deep/v{i}.tar.gz",
                    manifest={},
                    parent_version=f"v{i - 1}" if i else None,
                )
            )
        session.commit()
    data = client.get("/api/v1/models/deep/v119/lineage", headers=operator()).json()
    assert len(data["chain"]) == 100 and data["truncated"] is True
    assert data["chain"][-1]["version"] == "v20"


def test_lineage_validation_refuses_and_stores_nothing(client: TestClient, tmp_path: Path) -> None:
    assert upload(client, _bundle(tmp_path, "1.0.0")).status_code == 201
    bundle = _bundle(tmp_path, "2.0.0")
    cases: list[tuple[dict[str, str], int, str]] = [
        ({"parent": "0.9.0"}, 400, "not registered"),
        ({"parent": "2.0.0"}, 400, "its own parent"),
        ({"parent": "../x"}, 422, "parent"),
        ({"dataset_sha256": "xyz"}, 422, "dataset_sha256"),
        ({"dataset_sha256": "a" * 63}, 422, "dataset_sha256"),
        ({"training_ref": "r" * 201}, 422, "training_ref"),
        ({"training_ref": "line\nbreak"}, 422, "training_ref"),
    ]
    for params, status, words in cases:
        response = _push(client, bundle, **params)
        assert response.status_code == status, (params, response.text)
        assert words in response.json()["detail"], (params, response.text)
    big = _bundle(tmp_path / "big", "3.0.0", b'{"pad": "' + b"x" * (256 * 1024) + b'"}')
    too_big = _push(client, big)
    assert too_big.status_code == 400 and "larger than" in too_big.json()["detail"]
    not_object = _push(client, _bundle(tmp_path / "list", "4.0.0", b"[1, 2]"))
    assert not_object.status_code == 400 and "not an object" in not_object.json()["detail"]
    versions = [m["version"] for m in client.get("/api/v1/models", headers=operator()).json()]
    assert versions == ["1.0.0"]
