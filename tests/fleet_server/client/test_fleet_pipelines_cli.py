"""``edgefleet fleet pipelines runs|show|start|cancel`` against a recording HTTP server: the
requests sent, the tables printed, ``--json`` as the server's JSON, and bad ids refused before a
request."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.fleet_server.client.conftest import FakeServer

STEP = {
    "name": "train", "state": "failed", "attempt": 2, "started_at": "2026-12-07T09:00:00Z",
    "finished_at": "2026-12-07T09:01:00Z", "detail": "training command exited 1: boom",
    "numbers": {"exit_code": 1, "seconds": 4.2}, "log": "Traceback\nRuntimeError: boom\n",
}  # fmt: skip
RUN = {
    "id": 7, "model_name": "digits", "source": "pipeline", "state": "failed", "step": "train",
    "trigger": {"detector": "input_psi"}, "parent_version": "1.0.0", "candidate_version": None,
    "dataset_sha256": "ab" * 32, "rollout_id": None, "alert_id": 12,
    "error": "train: training command exited 1: boom", "created_at": "2026-12-07T08:59:00Z",
    "updated_at": "2026-12-07T09:01:00Z", "finished_at": "2026-12-07T09:01:00Z", "steps": [STEP],
}  # fmt: skip


def test_runs_lists_with_filters(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route("GET", "/api/v1/pipelines/runs", json_body=[RUN])
    result = fleet("pipelines", "runs", "--model", "digits", "--state", "failed", "--limit", "5")
    assert result.code == 0, result.err
    request = fake_server.only_request()
    assert request.query == {"model": ["digits"], "state": ["failed"], "limit": ["5"]}
    for text in ("pipeline runs", "digits", "failed", "1.0.0", "exited 1"):
        assert text in result.out


def test_show_prints_steps_numbers_and_logs(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route("GET", "/api/v1/pipelines/runs/7", json_body=RUN)
    result = fleet("pipelines", "show", "7", "--logs")
    assert result.code == 0, result.err
    for text in ("pipeline run #7", "exit_code=1", "seconds=4.2", "RuntimeError: boom", "12"):
        assert text in result.out
    json_result = fleet("pipelines", "show", "7", "--json")
    assert json.loads(json_result.out) == RUN


def test_cancel_posts_the_reason(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route("POST", "/api/v1/pipelines/runs/7/cancel",
                      json_body={**RUN, "state": "cancelled"})  # fmt: skip
    result = fleet("pipelines", "cancel", "7", "--reason", "wrong labels")
    assert result.code == 0, result.err
    assert json.loads(fake_server.only_request().body) == {"reason": "wrong labels"}
    assert "cancelled" in result.out


def test_start_posts_the_model_and_reason(fleet: Any, fake_server: FakeServer) -> None:
    queued = {**RUN, "state": "queued", "step": None, "error": "", "steps": []}
    fake_server.route("POST", "/api/v1/pipelines/runs", json_body=queued, status=201)
    result = fleet("pipelines", "start", "digits", "--reason", "new labels")
    assert result.code == 0, result.err
    assert json.loads(fake_server.only_request().body) == {
        "model": "digits",
        "reason": "new labels",
    }
    assert "pipeline run #7" in result.out and "queued" in result.out


def test_bad_ids_are_refused_before_any_request(fleet: Any, fake_server: FakeServer) -> None:
    for bad in ("0", "-3", "x", str(2**31)):
        with pytest.raises(SystemExit):
            fleet("pipelines", "show", bad)
    with pytest.raises(SystemExit):
        fleet("pipelines", "runs", "--state", "done")
    assert fake_server.requests == []
