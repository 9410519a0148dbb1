"""The real agent on an emulated arm64 board against a real fleet server on the host.

The board is ``hil.arm64``'s cached Debian root (``python -m hil.arm64 build``; ``.ci/run``
builds it, the first time takes tens of minutes). Each run builds the edgefleet wheel from this
tree, installs ``edgefleet[agent]`` from it into a fresh venv on the board (the pinned aarch64
wheels come from the cached root) and runs ``edgefleet agent`` there under qemu-user-static:
enrolment, signed ONNX and TFLite models with their self-tests, a folder and a video source,
telemetry stored by the server, an update that commits and one that probation rolls back.

Without the board (or without qemu/binfmt, or not root) the tests skip with the reason; under
``EDGEFLEET_REQUIRE_SERVICES=1`` they fail. Emulated timings are not device timings: nothing
here asserts or reports speed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.agent.media import write_video
from tests.agent.probation_models import nan_on_real_inputs
from tests.fleet_server.helpers import wait_until
from tests.hil.board_scenario import (
    SLOW,
    VENV,
    BoardAgent,
    Site,
    agent_config,
    assign,
    enroll,
    running,
    served,
    serving_site,
    signing_key,
    tflite_digits,
)
from tests.utils.artifacts import bundle_of, digits_images, sign_artifact

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _signed_bundles(work: Path, factory: subprocess.Popen[bytes]) -> tuple[Path, dict[str, Path]]:
    """Signed bundles by ref (digits 1.0.0, 2.0.0, the NaN 3.0.0, digits-tfl 1.0.0 when
    TensorFlow is there) and the public key that verifies them."""
    from tests.utils.artifacts import build_digits_artifact

    key, private = signing_key(work)
    artifacts = work / "artifacts"
    bundles: dict[str, Path] = {}
    for version in ("1.0.0", "2.0.0"):
        art = build_digits_artifact(artifacts / f"digits-{version}", version=version)
        bundles[f"digits@{version}"] = bundle_of(
            sign_artifact(art, private), artifacts / f"digits-{version}.tar.gz"
        )
    bad = sign_artifact(nan_on_real_inputs(artifacts / "nan", version="3.0.0"), private)
    bundles["digits@3.0.0"] = bundle_of(bad, artifacts / "digits-3.0.0.tar.gz")
    tflite = tflite_digits(factory, work / "tflite", artifacts)
    if tflite is not None:
        bundles["digits-tfl@1.0.0"] = bundle_of(
            sign_artifact(tflite, private), artifacts / "digits-tfl-1.0.0.tar.gz"
        )
    return key, bundles


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("arm64")
    with serving_site(
        "arm64", work, requirement="edgefleet[agent] @ {wheel}", bundles=_signed_bundles
    ) as state:
        yield state


def test_the_board_is_arm64_and_runs_the_agent_wheel(site: Site) -> None:
    uname = site.board.run(["uname", "-m"]).stdout.strip()
    assert uname == "aarch64"
    probe = site.board.run(
        [
            f"{VENV}/bin/python",
            "-c",
            # The runtimes themselves are imported by the agent in the tests below.
            "import json, platform, importlib.metadata as m, agent; "
            "print(json.dumps({'machine': platform.machine(), 'edgefleet': "
            "str(m.distribution('edgefleet').locate_file('')), 'agent': agent.__file__}))",
        ],
        work=site.work,
        timeout=SLOW,
    )
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["machine"] == "aarch64"
    # The agent comes from this run's wheel in the fresh venv, not from the cached root.
    assert seen["edgefleet"].startswith(f"{VENV}/"), seen
    assert seen["agent"].startswith(f"{VENV}/lib/"), seen


def test_enrolled_agent_serves_signed_onnx_commits_an_update_and_rolls_back_a_bad_one(
    site: Site,
) -> None:
    device_id, credentials = enroll(site, "folder", device_class="aarch64", tags=["arm64-hil"])
    images = site.work / "images"
    digits_images(images, 8)
    # The bad model answers NaN for a blank image (its self-test rows are fine).
    cv2.imwrite(str(images / "blank.png"), np.zeros((8, 8), dtype=np.uint8))
    config = agent_config(
        site,
        name="folder",
        credentials=credentials,
        input_table=(
            f'[input]\ntype = "folder"\npath = "{site.board_path(images)}"\n'
            'pattern = "*.png"\nloop = true\nrate_hz = 20.0'
        ),
    )
    agent = BoardAgent(site, config)
    site.agents.append(agent)
    device = site.client.get_device(device_id)
    assert device["device_class"] == "aarch64" and "arm64-hil" in device["tags"]

    assign(site, device_id, "digits@1.0.0")
    wait_until(lambda: running(site, device_id) == "digits@1.0.0", SLOW, "digits 1.0.0", every=0.5)
    wait_until(lambda: served(site, device_id, "digits@1.0.0") > 0, SLOW, "telemetry", every=0.5)
    assert any(e.get("model") == "digits@1.0.0" for e in agent.logged("model committed"))
    # The board's own gauges reach the server (RSS from the board's /proc; the value is an
    # emulated process's and is not quoted anywhere).
    rows = site.client.device_telemetry(device_id, limit=50)
    assert any((row.get("system") or {}).get("rss_mb", 0) > 0 for row in rows), rows[:2]

    assign(site, device_id, "digits@2.0.0")
    wait_until(
        lambda: any(e.get("model") == "digits@2.0.0" for e in agent.logged("model committed")),
        SLOW,
        "2.0.0 committed after its probation",
        every=0.5,
    )
    wait_until(lambda: running(site, device_id) == "digits@2.0.0", SLOW, "2.0.0", every=0.5)

    assign(site, device_id, "digits@3.0.0")
    wait_until(
        lambda: bool(agent.logged("update rolled back")), SLOW, "3.0.0 rolled back", every=0.5
    )
    (rolled,) = agent.logged("update rolled back")
    assert rolled["model"] == "digits@3.0.0" and "NaN or Inf" in rolled["error"], rolled
    assert "serving digits@2.0.0 again" in rolled["error"]
    wait_until(
        lambda: (site.client.get_device(device_id).get("last_error") or "").startswith(
            rolled["error"][:40]
        ),
        SLOW,
        "the rollback reported to the server",
        every=0.5,
    )
    assert running(site, device_id) == "digits@2.0.0"
    assert not any(e.get("model") == "digits@3.0.0" for e in agent.logged("model committed"))
    before = served(site, device_id, "digits@2.0.0")
    wait_until(
        lambda: served(site, device_id, "digits@2.0.0") > before,
        SLOW,
        "2.0.0 still serving after the rollback",
        every=0.5,
    )
    assert agent.stop() == 0, agent.log.read_text()[-2000:]


def test_signed_tflite_model_serves_a_video(site: Site) -> None:
    if "digits-tfl@1.0.0" not in site.bundles:
        if os.environ.get("EDGEFLEET_REQUIRE_TF"):
            pytest.fail("EDGEFLEET_REQUIRE_TF is set but tensorflow does not import")
        pytest.skip("tensorflow is not installed: cannot make the .tflite test model")
    device_id, credentials = enroll(site, "video", device_class="aarch64", tags=["arm64-hil"])
    video = write_video(site.work / "clip.avi", 40)
    config = agent_config(
        site,
        name="video",
        credentials=credentials,
        input_table=(f'[input]\ntype = "video"\npath = "{site.board_path(video)}"\nloop = true'),
    )
    agent = BoardAgent(site, config)
    site.agents.append(agent)
    assign(site, device_id, "digits-tfl@1.0.0")
    wait_until(
        lambda: running(site, device_id) == "digits-tfl@1.0.0",
        SLOW,
        "the TFLite model",
        every=0.5,
    )
    wait_until(
        lambda: served(site, device_id, "digits-tfl@1.0.0") >= 40,
        SLOW,
        "video frames served by the TFLite model",
        every=0.5,
    )
    assert any(e.get("model") == "digits-tfl@1.0.0" for e in agent.logged("model committed"))
    assert agent.stop() == 0, agent.log.read_text()[-2000:]
    shutil.rmtree(site.work / "data-video", ignore_errors=True)
