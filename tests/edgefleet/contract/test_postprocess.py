"""manifest.postprocess: bounded, tagged by layout, checked against the task and the outputs;
a manifest without it keeps its bytes (older manifests and agents are unaffected)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgefleet.contract import ContractError, parse_manifest, signing_bytes
from edgefleet.contract.postprocess import GflPost, YoloXPost

FIXTURE = Path(__file__).parents[2] / "fixtures" / "contract" / "manifest.in.json"


def _manifest(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    data.update(changes)
    return data


def _detector(post: dict[str, Any]) -> dict[str, Any]:
    data = _manifest()
    return _manifest(task="detection", postprocess=post, outputs=data["outputs"])


def _first_output() -> str:
    return str(_manifest()["outputs"][0]["name"])


def test_without_postprocess_bytes_are_unchanged() -> None:
    manifest = parse_manifest(FIXTURE.read_bytes())
    assert manifest.postprocess is None
    assert "postprocess" not in manifest.to_json()
    assert "postprocess" not in signing_bytes(manifest).decode()
    assert "postprocess" not in manifest.model_dump()


def test_round_trip_with_a_layout() -> None:
    raw = json.dumps(_detector({"layout": "yolox", "output": _first_output(), "strides": [8, 16]}))
    manifest = parse_manifest(raw)
    assert isinstance(manifest.postprocess, YoloXPost) and manifest.postprocess.strides == [8, 16]
    again = parse_manifest(manifest.to_json())
    assert again == manifest
    assert b'"layout":"yolox"' in signing_bytes(manifest)


@pytest.mark.parametrize(
    ("post", "message"),
    [
        ({"layout": "retinanet", "output": "x"}, "Invalid value 'retinanet'"),
        ({"layout": "yolox", "output": "nope"}, "unknown outputs"),
        ({"layout": "yolox", "output": "{out}", "strides": [0]}, ">= 1"),
        ({"layout": "yolox", "output": "{out}", "strides": [8] * 9}, "length <= 8"),
        ({"layout": "yolox", "output": "{out}", "score_threshold": 1.5}, "<= 1"),
        ({"layout": "yolox", "output": "{out}", "max_detections": 10**6}, "<= 10000"),
        ({"layout": "yolox", "output": "{out}", "evil": 1}, "unknown field"),
        ({"layout": "yolox", "output": "x" * 300}, "length <= 256"),
        (
            {"layout": "gfl", "score_outputs": ["{out}"], "box_outputs": [], "strides": [8]},
            "length >= 1",
        ),
        (
            {
                "layout": "gfl",
                "score_outputs": ["{out}"],
                "box_outputs": ["{out}"],
                "strides": [8, 16],
            },  # fmt: skip
            "one score output and one box output per stride",
        ),
        ({"layout": "mask", "output": "{out}", "channels_last": False}, "is for segmentation"),
        ("yolox", "Expected `object | null`, got `str`"),
    ],
)
def test_hostile_or_inconsistent_postprocess_is_refused(post: Any, message: str) -> None:
    if isinstance(post, dict):
        post = {
            k: [x.format(out=_first_output()) for x in v]
            if isinstance(v, list) and v and isinstance(v[0], str)
            else v.format(out=_first_output())
            if isinstance(v, str)
            else v
            for k, v in post.items()
        }
    with pytest.raises(ContractError, match=message):
        parse_manifest(json.dumps(_detector(post)))


def test_layout_on_a_raw_task_is_refused() -> None:
    post = {"layout": "yolox", "output": _first_output()}
    with pytest.raises(ContractError, match="is for detection"):
        parse_manifest(json.dumps(_manifest(task="raw", postprocess=post)))


def test_gfl_built_in_python_is_checked() -> None:
    with pytest.raises((ContractError, ValueError)):
        GflPost(score_outputs=["a"], box_outputs=["b", "c"], strides=[8])
