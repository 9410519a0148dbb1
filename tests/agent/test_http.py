"""The device HTTP endpoint (POST /infer, GET /healthz, GET /metrics), bad requests, and a hot
swap under load: clients hammer /infer while the updater swaps models; every request counted."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from agent.config import parse_config
from agent.inputs.http import HttpSource
from agent.service import AgentService
from edgefleet.artifact import read_manifest
from edgefleet.contract import DesiredModel, DesiredState
from tests.agent.helpers import BundleServer, config_toml, rehash, serve_bundles
from tests.agent.onnx_models import mlp
from tests.utils.artifacts import bundle_of, digits_images
from tests.utils.net import free_port


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _request(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    # S310: the URL is always http://127.0.0.1:<port> of the endpoint under test.
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET")  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class Running:
    def __init__(self, service: AgentService, url: str, stop: threading.Event) -> None:
        self.service, self.url, self.stop = service, url, stop

    def desire(self, artifact: Path, seq: int) -> None:
        """Put an artifact where the store expects it and apply a desired state for it."""
        manifest = read_manifest(artifact)
        dest = self.service.store.artifact_dir(manifest.ref)
        if not dest.exists():
            shutil.copytree(artifact, dest)
        model = DesiredModel(
            name=manifest.name,
            version=manifest.version,
            url="http://127.0.0.1:9/unused",
            sha256="0" * 64,
            size=1,
        )
        self.service.updater.apply(DesiredState(device_id="dev-1", seq=seq, model=model))


@pytest.fixture
def bundles() -> Iterator[BundleServer]:
    with serve_bundles("device-token") as server:
        yield server


@pytest.fixture
def running(tmp_path: Path, bundles: BundleServer) -> Iterator[Running]:
    text = config_toml(
        data_dir=tmp_path / "data",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",
        server_url=bundles.url,
    )
    text += '\n[input]\ntype = "http"\nport = 0\nmax_body_bytes = 100000\n'
    service = AgentService(parse_config(text))
    service.publisher.event = lambda *a, **k: None  # type: ignore[method-assign]
    service.publisher.state = lambda *a, **k: None  # type: ignore[method-assign]
    source = service.source
    assert isinstance(source, HttpSource)
    stop = threading.Event()
    threads = [
        threading.Thread(target=service.pipeline.run, args=(stop,)),
        threading.Thread(target=service.pipeline.feed, args=(source, stop)),
    ]
    for t in threads:
        t.start()
    assert source.bound.wait(5)
    yield Running(service, f"http://127.0.0.1:{source.port}", stop)
    stop.set()
    for t in threads:
        t.join(5)
        assert not t.is_alive()


def test_endpoints_and_bad_requests(running: Running, digits_v1: Path, tmp_path: Path) -> None:
    url = running.url
    status, body = _request(url + "/healthz")
    assert status == 503 and json.loads(body)["status"] == "no_model"
    image = digits_images(tmp_path, 1)[0]
    status, body = _request(url + "/infer", image.read_bytes())
    assert status == 503 and "no model" in json.loads(body)["error"]

    running.desire(digits_v1, 1)
    status, body = _request(url + "/healthz")
    assert status == 200 and json.loads(body)["model"] == "digits@1.0.0"
    status, body = _request(url + "/infer", image.read_bytes())
    answer = json.loads(body)
    assert status == 200
    [result] = answer["results"]
    assert result["top_k"][0]["label"] == image.stem[-1] and result["model"] == "digits@1.0.0"
    rows = load_digits().data[1400:1403].astype(np.float32)
    status, body = _request(url + "/infer", _npy(rows))  # batch N as one tensor
    assert status == 200
    labels = [r["top_k"][0]["label"] for r in json.loads(body)["results"]]
    assert labels == [str(t) for t in load_digits().target[1400:1403]]

    bad = {
        "corrupt image": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, 400, "decode"),
        "wrong shape": (_npy(np.zeros((1, 63), np.float32)), 422, "does not fit"),
        "wrong dtype": (_npy(np.zeros((1, 64), np.complex64)), 422, "cannot become"),
        "not a tensor": (b"\x93NUMPY\x01\x00garbage", 400, "unreadable .npy"),
        "too large": (b"x" * 100_001, 413, "larger"),
    }
    for name, (payload, code, words) in bad.items():
        status, body = _request(url + "/infer", payload)
        assert (status, words in json.loads(body)["error"]) == (code, True), name
    assert _request(url + "/nope")[0] == 404
    # The agent keeps serving after every bad request, and counted each one.
    assert _request(url + "/infer", image.read_bytes())[0] == 200
    status, body = _request(url + "/metrics")
    text = body.decode()
    assert status == 200
    assert "edgefleet_agent_inferences_total 3" in text
    for kind in ("corrupt_image", "bad_tensor_shape", "bad_tensor_dtype", "input_too_large"):
        assert f'edgefleet_agent_errors_total{{kind="{kind}"}} 1' in text, kind
    assert 'edgefleet_agent_model_info{model="digits@1.0.0"} 1' in text


def test_hot_swap_under_load_answers_every_request(
    running: Running, digits_v1: Path, digits_v2: Path, tmp_path: Path
) -> None:
    running.desire(digits_v1, 1)
    images = [p.read_bytes() for p in digits_images(tmp_path, 8)]
    tensor = _npy(load_digits().data[1400:1402].astype(np.float32))
    answers: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for i in range(60):
            body = tensor if (i + k) % 4 == 0 else images[(i + k) % len(images)]
            status, raw = _request(running.url + "/infer", body)
            with lock:
                answers.append((status, json.loads(raw)))

    clients = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for c in clients:
        c.start()
    swaps = 0
    seq = 2
    while any(c.is_alive() for c in clients):
        running.desire(digits_v2 if swaps % 2 == 0 else digits_v1, seq)
        seq += 1
        swaps += 1
        time.sleep(0.005)
    for c in clients:
        c.join()
    assert len(answers) == 6 * 60
    failures = [a for a in answers if a[0] != 200]
    assert failures == []
    models = {r["model"] for _, a in answers for r in a["results"]}
    assert models == {"digits@1.0.0", "digits@2.0.0"}
    assert swaps >= 4
    totals = running.service.collector.totals()
    assert totals.inferences == 6 * 60 and totals.errors == {} and totals.dropped == 0


def test_a_model_that_is_not_what_its_manifest_says_is_refused_and_counted(
    running: Running, bundles: BundleServer, digits_v1: Path, digits_v2: Path, tmp_path: Path
) -> None:
    running.desire(digits_v1, 1)
    bad = Path(shutil.copytree(digits_v2, tmp_path / "bad"))
    (bad / "model.onnx").write_bytes(mlp(64, 16))  # a real ONNX model, but not this one
    rehash(bad)
    data = bundle_of(bad, tmp_path / "bad.tar.gz").read_bytes()
    bundles.files["/bundles/bad.tar.gz"] = data
    model = DesiredModel(
        name="digits",
        version="2.0.0",
        url="/bundles/bad.tar.gz",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    running.service.updater.apply(DesiredState(device_id="dev-1", seq=2, model=model))
    snapshot = running.service.snapshot
    assert snapshot.phase == "serving" and str(snapshot.running) == "digits@1.0.0"
    assert snapshot.last_error is not None and "manifest outputs" in snapshot.last_error
    image = digits_images(tmp_path / "img", 1)[0]
    status, body = _request(running.url + "/infer", image.read_bytes())
    assert status == 200 and json.loads(body)["results"][0]["model"] == "digits@1.0.0"
    status, body = _request(running.url + "/metrics")
    assert 'edgefleet_agent_errors_total{kind="update_failed"} 1' in body.decode()
