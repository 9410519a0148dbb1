"""/api/v1/pipelines on a running server (SQLite and PostgreSQL): runs listed and shown with their
steps, started by hand, cancel, the webhook backend's run record with an external engine
reporting its steps back, and hostile step reports refused with one clear error that changes
nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.models import DriftAlert
from fleet_server.models.types import utcnow
from fleet_server.runtime import Runtime
from fleet_server.services.drift.retrain import RetrainError, WebhookRetrainConfig, backend_for
from fleet_server.services.pipelines import service
from tests.fleet_server.helpers import (
    bearer,
    make_settings,
    operator,
    running_app,
    unique_id,
    upload,
)

pytestmark = pytest.mark.integration
RUNS = "/api/v1/pipelines/runs"


def _start(runtime: Runtime, source: str, model: str = "digits") -> int:
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        payload = {"model": model, "version": "*", "detector": "input_psi", "alert_id": 3}
        run_id = service.start_run(session, payload=payload, source=source, now=utcnow()).id
        assert run_id is not None
        return run_id


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP endpoint standing in for the user's pipeline engine."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            return

        def do_POST(self) -> None:  # noqa: N802 - stdlib's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_runs_are_listed_shown_and_cancelled(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    first = _start(runtime, "pipeline")
    other = _start(runtime, "webhook", model="cats")
    viewer = client.post(
        "/api/v1/tokens", json={"name": unique_id("v"), "role": "viewer"}, headers=operator()
    ).json()["token"]
    listed = client.get(RUNS, headers=bearer(viewer))
    assert listed.status_code == 200, listed.text
    assert [r["id"] for r in listed.json()] == [other, first]
    only = client.get(RUNS, params={"model": "digits", "state": "queued"}, headers=bearer(viewer))
    assert [r["id"] for r in only.json()] == [first]
    shown = client.get(f"{RUNS}/{first}", headers=bearer(viewer)).json()
    assert shown["state"] == "queued" and shown["trigger"]["alert_id"] == 3
    assert "context" not in shown and "active_model" not in shown
    assert client.post(f"{RUNS}/{first}/cancel", headers=bearer(viewer)).status_code == 403
    cancelled = client.post(
        f"{RUNS}/{first}/cancel", json={"reason": "bad labels"}, headers=operator()
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["error"] == "cancelled by bootstrap: bad labels"
    again = client.post(f"{RUNS}/{first}/cancel", headers=operator())
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    assert client.get(f"{RUNS}/999999", headers=operator()).status_code == 404
    for bad in ("0", "-1", str(2**31), "x"):
        assert client.get(f"{RUNS}/{bad}", headers=operator()).status_code == 422
    assert client.get(RUNS, params={"state": "done"}, headers=operator()).status_code == 422
    assert client.get(RUNS, params={"limit": 0}, headers=operator()).status_code == 422


def test_an_operator_starts_a_run_by_hand(
    tmp_path: Path, database_url: str, digits_bundle: Path
) -> None:
    pipeline = {  # the run waits for labels at its snapshot: nothing else runs here
        "train_argv": ["train"],
        "min_samples": 1000,
        "rollout": {"selector": {"tags": ["line-1"]}},
    }
    retrain = {"type": "pipeline", "models": {"digits": pipeline}}
    settings = make_settings(tmp_path, database_url, retrain=retrain)
    with running_app(settings) as (client, _):
        body = {"model": "digits", "reason": "new labels"}
        missing = client.post(RUNS, json=body, headers=operator())
        assert missing.status_code == 404 and "no registered version" in missing.json()["detail"]
        assert upload(client, digits_bundle).status_code == 201
        viewer = client.post(
            "/api/v1/tokens", json={"name": unique_id("v"), "role": "viewer"}, headers=operator()
        ).json()["token"]
        assert client.post(RUNS, json=body, headers=bearer(viewer)).status_code == 403
        assert client.post(RUNS, json=body).status_code == 401
        started = client.post(RUNS, json=body, headers=operator())
        assert started.status_code == 201, started.text
        run = started.json()
        assert run["source"] == "pipeline" and run["parent_version"] == "1.0.0"
        assert run["trigger"] == {
            "kind": "manual",
            "model": "digits",
            "detail": "started by bootstrap: new labels",
        }
        again = client.post(RUNS, json=body, headers=operator())
        assert again.status_code == 409 and "still" in again.json()["detail"]
        other = client.post(RUNS, json={"model": "cats"}, headers=operator())
        assert other.status_code == 404 and "no pipeline is configured" in other.json()["detail"]
        for bad in ({"model": "../x"}, {"model": "digits", "reason": "r" * 501},
                    {"model": "digits", "extra": 1}, {}, [1]):  # fmt: skip
            assert client.post(RUNS, json=bad, headers=operator()).status_code == 422, bad
        listed = client.get(RUNS, headers=operator()).json()
        assert [r["id"] for r in listed] == [run["id"]]


def test_without_the_pipeline_backend_a_run_cannot_be_started(
    app: tuple[TestClient, Runtime],
) -> None:
    client, _ = app
    refused = client.post(RUNS, json={"model": "digits"}, headers=operator())
    assert refused.status_code == 409 and "not `pipeline`" in refused.json()["detail"]


def test_a_webhook_run_is_recorded_and_its_engine_reports_the_steps(
    app: tuple[TestClient, Runtime], receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    client, runtime = app
    url, received = receiver
    hook = backend_for(WebhookRetrainConfig(type="webhook", url=url), engine=runtime.engine)
    detail = hook.trigger({"model": "digits", "version": "*", "detector": "input_psi"})
    assert detail.startswith("HTTP 202; pipeline run #")
    run_id = received[0]["pipeline_run"]
    assert received[0]["report_path"] == f"{RUNS}/{run_id}/steps"
    with pytest.raises(RetrainError, match="still running"):
        hook.trigger({"model": "digits", "version": "*"})  # one run per model
    path = received[0]["report_path"]
    steps = [
        {"name": "train", "state": "running", "detail": "epoch 3/12"},
        {
            "name": "train",
            "state": "succeeded",
            "detail": "12 epochs",
            "numbers": {"loss": 0.21},
            "log": "epoch 12 loss 0.21\n",
        },
        {
            "name": "push",
            "state": "succeeded",
            "candidate_version": "1.1.0",
            "dataset_sha256": "ab" * 32,
            "finish_run": True,
        },
    ]
    for body in steps:
        answer = client.post(path, json=body, headers=operator())
        assert answer.status_code == 200, answer.text
    run = client.get(f"{RUNS}/{run_id}", headers=operator()).json()
    assert run["source"] == "webhook" and run["state"] == "succeeded"
    assert run["candidate_version"] == "1.1.0" and run["dataset_sha256"] == "ab" * 32
    assert [(s["name"], s["state"]) for s in run["steps"]] == [
        ("train", "succeeded"),
        ("push", "succeeded"),
    ]
    assert run["steps"][0]["numbers"] == {"loss": 0.21} and "epoch 12" in run["steps"][0]["log"]
    late = client.post(path, json={"name": "push", "state": "failed"}, headers=operator())
    assert late.status_code == 409, "a finished run takes no more reports"


def test_an_engine_reports_a_failed_step_and_an_unreachable_webhook_fails_its_run(
    app: tuple[TestClient, Runtime], receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    client, runtime = app
    assert runtime.engine is not None
    run_id = _start(runtime, "webhook")
    failed = client.post(
        f"{RUNS}/{run_id}/steps",
        json={"name": "train", "state": "failed", "detail": "OOM on the GPU node"},
        headers=operator(),
    )
    assert (
        failed.json()["state"] == "failed"
        and failed.json()["error"] == "train: OOM on the GPU node"
    )
    dead = WebhookRetrainConfig(type="webhook", url="http://127.0.0.1:9/hook", timeout_s=2)
    with pytest.raises(RetrainError, match="webhook failed"):
        backend_for(dead, engine=runtime.engine).trigger({"model": "digits", "version": "*"})
    runs = client.get(RUNS, params={"model": "digits"}, headers=operator()).json()
    assert runs[0]["state"] == "failed" and runs[0]["error"].startswith("webhook: webhook failed")
    with Session(runtime.engine) as session:
        for run in runs:
            alert = session.get(DriftAlert, run["alert_id"])
            assert alert is not None and alert.detector == "pipeline_failed"


HOSTILE: list[tuple[Any, int]] = [
    ({"name": "../etc", "state": "running"}, 422),
    ({"name": "Train", "state": "running"}, 422),
    ({"name": "t" * 33, "state": "running"}, 422),
    ({"name": "", "state": "running"}, 422),
    ({"name": "train", "state": "done"}, 422),
    ({"name": "train", "state": "running", "extra": 1}, 422),
    ({"name": "train", "state": "running", "numbers": {"nested": {"a": 1}}}, 422),
    ({"name": "train", "state": "running", "numbers": {f"n{i}": i for i in range(51)}}, 422),
    ({"name": "train", "state": "running", "numbers": {"k" * 65: 1}}, 422),
    ({"name": "train", "state": "running", "numbers": {"s": "x" * 201}}, 422),
    ({"name": "train", "state": "running", "detail": "d" * 1001}, 422),
    ({"name": "train", "state": "running", "dataset_sha256": "AB" * 32}, 422),
    ({"name": "train", "state": "running", "candidate_version": "../1"}, 422),
    ({"name": "train", "state": "running", "log": "x" * (64 * 1024 + 1)}, 413),
    ({"name": "train", "state": "running", "log": "é" * (32 * 1024 + 1)}, 413),
    ([1, 2], 422),
    ("not json", 422),
]


def test_hostile_step_reports_are_refused_and_change_nothing(
    app: tuple[TestClient, Runtime],
) -> None:
    client, runtime = app
    run_id = _start(runtime, "webhook")
    for body, status in HOSTILE:
        kwargs: dict[str, Any] = {"content": body} if isinstance(body, str) else {"json": body}
        answer = client.post(f"{RUNS}/{run_id}/steps", headers=operator(), **kwargs)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["detail"]
    run = client.get(f"{RUNS}/{run_id}", headers=operator()).json()
    assert run["state"] == "running" and run["steps"] == []


def test_step_reports_go_only_to_webhook_runs(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    run_id = _start(runtime, "pipeline")
    body = {"name": "train", "state": "succeeded", "finish_run": True}
    answer = client.post(f"{RUNS}/{run_id}/steps", json=body, headers=operator())
    assert answer.status_code == 409 and "driven by the server" in answer.json()["detail"]
    assert client.post(f"{RUNS}/424242/steps", json=body, headers=operator()).status_code == 404
    assert client.post(f"{RUNS}/{run_id}/steps", json=body).status_code == 401
