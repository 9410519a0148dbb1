"""The CLI over a real server (uvicorn, real HTTP): capture set/show, samples list/get/label,
dataset snapshots (deterministic sha256), and the Label Studio round trip on files shaped
exactly like Label Studio's JSON export (tests/fixtures/labelstudio/)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_server.client.conftest import run_fleet
from tests.fleet_server.sample_helpers import jpeg, meta_for, post_sample
from tests.utils.server import LiveServer, live_server

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parent.parent / "fixtures" / "labelstudio"


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    with live_server(tmp_path, database_url=database_url, public_url="http://fleet.test") as live:
        yield live


def cli(server: LiveServer, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run_fleet(["fleet", *args, "--server", server.url, "--token", server.token])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def cli_json(server: LiveServer, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out = cli(server, capsys, *args, "--json")
    assert code == 0, out
    return json.loads(out)


def _populate(
    server: LiveServer, capsys: pytest.CaptureFixture[str], digits_bundle: Path
) -> tuple[str, list[int]]:
    """digits@1.0.0, one device assigned it, a capture policy set by the CLI, 4 samples."""
    import httpx

    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers) as http:
        with digits_bundle.open("rb") as fh:
            assert http.post("/api/v1/models", files={"bundle": fh}).status_code == 201
        device = http.post("/api/v1/devices", json={"device_id": "cam-1"}).json()
        assert (
            http.post(
                "/api/v1/assignments",
                json={"model": "digits", "version": "1.0.0", "device_ids": ["cam-1"]},
            ).status_code
            == 200
        )
    shown = cli_json(
        server,
        capsys,
        "capture",
        "set",
        "digits",
        "--low-confidence",
        "0.5",
        "--random",
        "0.01",
        "--max-per-day",
        "100",
        "--max-mb-per-day",
        "5",
        "--jpeg-quality",
        "80",
    )
    assert shown["policy"]["max_bytes_per_day"] == 5_000_000 and shown["republished"] == 1
    assert cli_json(server, capsys, "capture", "show", "digits")["policy"]["random"] == 0.01
    ids = []
    with httpx.Client(base_url=server.url) as http:
        for seed in range(4):
            image = jpeg(40 + seed)
            response = post_sample(http, device["token"], meta_for(image, "cam-1"), image)  # type: ignore[arg-type]
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
    return device["token"], ids


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_snapshot_is_deterministic_and_its_sha_is_the_manifest(
    server: LiveServer, capsys: pytest.CaptureFixture[str], digits_bundle: Path, tmp_path: Path
) -> None:
    _, ids = _populate(server, capsys, digits_bundle)
    listed = cli_json(server, capsys, "samples", "list", "--model", "digits", "--unlabelled")
    assert sorted(i["id"] for i in listed["items"]) == sorted(ids)
    code, out = cli(server, capsys, "samples", "label", str(ids[0]), "3")
    assert code == 0 and "labelled 3" in out
    code, out = cli(server, capsys, "samples", "label", str(ids[1]), "cat")
    assert code == 1 and "'cat'" in out
    assert cli(server, capsys, "samples", "label", str(ids[1]), "7")[0] == 0
    assert cli(server, capsys, "samples", "label", str(ids[2]), "7")[0] == 0
    code, out = cli(server, capsys, "samples", "get", str(ids[0]), "-o", str(tmp_path / "one.jpg"))
    assert code == 0 and (tmp_path / "one.jpg").read_bytes() == jpeg(40)

    first = cli_json(server, capsys, "samples", "export", "digits", "-o", str(tmp_path / "a"))
    second = cli_json(server, capsys, "samples", "export", "digits", "-o", str(tmp_path / "b"))
    assert first["dataset_sha256"] == second["dataset_sha256"]
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    manifest_bytes = (tmp_path / "a" / "snapshot.json").read_bytes()
    assert hashlib.sha256(manifest_bytes).hexdigest() == first["dataset_sha256"]
    tree = _tree(tmp_path / "a")
    assert sorted(tree) == sorted(
        [f"3/{ids[0]}.jpg", f"7/{ids[1]}.jpg", f"7/{ids[2]}.jpg", "snapshot.json"]
    )
    assert (tmp_path / "a" / "3" / f"{ids[0]}.jpg").read_bytes() == jpeg(40)
    manifest = json.loads(manifest_bytes)
    assert manifest["counts"]["per_class"] == {"3": 1, "7": 2}
    assert manifest["classes"][:10] == [str(i) for i in range(10)]

    # A label change is a different dataset; a non-empty directory is refused.
    assert cli(server, capsys, "samples", "label", str(ids[2]), "1")[0] == 0
    third = cli_json(server, capsys, "samples", "export", "digits", "-o", str(tmp_path / "c"))
    assert third["dataset_sha256"] != first["dataset_sha256"]
    code, out = cli(server, capsys, "samples", "export", "digits", "-o", str(tmp_path / "a"))
    assert code == 1 and "not an empty directory" in out


def _fill(template: Path, ids: dict[str, int], dest: Path) -> Path:
    text = template.read_text()
    for token, value in ids.items():
        text = text.replace(f'"{token}"', str(value)).replace(token, str(value))
    dest.write_text(text)
    return dest


def test_label_studio_round_trip(
    server: LiveServer, capsys: pytest.CaptureFixture[str], digits_bundle: Path, tmp_path: Path
) -> None:
    _, ids = _populate(server, capsys, digits_bundle)
    # Export: Label Studio's import format, every sample (labelled or not).
    exported = cli_json(
        server,
        capsys,
        "samples",
        "export",
        "digits",
        "-o",
        str(tmp_path / "ls"),
        "--format",
        "labelstudio",
    )
    assert exported["samples"] == 4
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert isinstance(tasks, list) and len(tasks) == 4
    for task in tasks:
        assert (tmp_path / "ls" / task["data"]["image"]).is_file()
        assert task["data"]["edgefleet_sample"] in ids
        [prediction] = task["predictions"]
        assert prediction["result"][0]["type"] == "choices"
        assert prediction["result"][0]["value"] == {"choices": ["7"]}

    # Import: Label Studio's JSON export (newest annotation wins, cancelled ones skipped).
    export = _fill(
        FIXTURES / "export-classification.json",
        {"SAMPLE_A": ids[0], "SAMPLE_B": ids[1], "SAMPLE_C": ids[2]},
        tmp_path / "export.json",
    )
    result = cli_json(server, capsys, "samples", "import", str(export))
    assert result == {"labelled": 2, "skipped_without_annotation": 1}
    labels = {
        s["id"]: s["label"]
        for s in cli_json(server, capsys, "samples", "list", "--model", "digits")["items"]
    }
    assert labels == {ids[0]: "3", ids[1]: "4", ids[2]: None, ids[3]: None}

    # Rectangles in percent of original_width/height become pixel boxes.
    boxes_export = _fill(
        FIXTURES / "export-detection.json", {"SAMPLE_D": ids[3]}, tmp_path / "boxes.json"
    )
    assert cli_json(server, capsys, "samples", "import", str(boxes_export))["labelled"] == 1
    [row] = [
        s
        for s in cli_json(server, capsys, "samples", "list", "--model", "digits")["items"]
        if s["id"] == ids[3]
    ]
    assert row["boxes"] == [
        {"label": "7", "x1": 2.0, "y1": 4.0, "x2": 10.0, "y2": 10.0},
        {"label": "1", "x1": 0.0, "y1": 0.0, "x2": 4.0, "y2": 4.0},
    ]
    coco = cli_json(
        server,
        capsys,
        "samples",
        "export",
        "digits",
        "-o",
        str(tmp_path / "coco"),
        "--format",
        "coco",
    )
    document = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert coco["samples"] == 1
    assert document["images"] == [
        {"id": ids[3], "file_name": f"images/{ids[3]}.jpg", "width": 16, "height": 16}
    ]
    assert [a["bbox"] for a in document["annotations"]] == [
        [2.0, 4.0, 8.0, 6.0],
        [0.0, 0.0, 4.0, 4.0],
    ]
    assert {c["name"]: c["id"] for c in document["categories"]}["7"] == 8

    # An unknown class in an export: refused naming it, nothing labelled.
    bad = json.loads(export.read_text())
    bad[0]["annotations"][0]["result"][0]["value"]["choices"] = ["zebra"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, out = cli(server, capsys, "samples", "import", str(tmp_path / "bad.json"))
    assert code == 1 and "'zebra'" in out
    after = {
        s["id"]: s["label"]
        for s in cli_json(server, capsys, "samples", "list", "--model", "digits")["items"]
    }
    assert after[ids[0]] == "3" and after[ids[1]] == "4"
    (tmp_path / "broken.json").write_text('{"not": "a list"}')
    code, out = cli(server, capsys, "samples", "import", str(tmp_path / "broken.json"))
    assert code == 1 and "list of tasks" in out
