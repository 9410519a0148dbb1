"""The real agent on an emulated armhf board (32-bit Raspberry Pi OS's class) against a real fleet
server on the host.

The board is ``hil.arm64``'s cached Debian bookworm armhf root (``python -m hil.arm64 --arch armhf
build``): Debian's numpy 1.24 and opencv 4.6, tflite-runtime 2.14.0 and cryptography wheels,
msgspec and cffi built from their sdists. Each run installs this tree's wheel into a fresh venv
there without its ``[agent-armv7]`` extra (opencv is Debian's ``python3-opencv``, which pip does
not know as ``opencv-python-headless``; the test imports the extra's modules instead) and runs
``edgefleet agent`` with ``profile = "rpi-armv7"`` under qemu-arm: enrolment, a signed TFLite
model through ``tflite_runtime`` with its self-test, a video served, telemetry stored by the
server; and an ONNX artifact refused, by the server for the rpi-armv7 class and by the device
itself (one clear line) when its class is not one the server knows.

Without the board (or qemu-arm's binfmt entry, or root) the tests skip with the reason; under
``EDGEFLEET_REQUIRE_SERVICES=1`` they fail. Emulated timings are not device timings.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.media import write_video
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

PROFILE = 'profile = "rpi-armv7"\n'


def _signed_bundles(work: Path, factory: subprocess.Popen[bytes]) -> tuple[Path, dict[str, Path]]:
    """digits-tfl@1.0.0 (TFLite) and digits@1.0.0 (ONNX), signed, and the key that verifies."""
    from tests.utils.artifacts import build_digits_artifact

    key, private = signing_key(work)
    artifacts = work / "artifacts"
    onnx = build_digits_artifact(artifacts / "digits-1.0.0", version="1.0.0")
    bundles = {
        "digits@1.0.0": bundle_of(sign_artifact(onnx, private), artifacts / "digits-1.0.0.tar.gz")
    }
    tflite = tflite_digits(factory, work / "tflite", artifacts)
    if tflite is None:
        if os.environ.get("EDGEFLEET_REQUIRE_TF"):
            pytest.fail("EDGEFLEET_REQUIRE_TF is set but tensorflow does not import")
        pytest.skip("tensorflow is not installed: cannot make the .tflite test model")
    bundles["digits-tfl@1.0.0"] = bundle_of(
        sign_artifact(tflite, private), artifacts / "digits-tfl-1.0.0.tar.gz"
    )
    return key, bundles


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("armhf")
    with serving_site("armhf", work, requirement="{wheel}", bundles=_signed_bundles) as state:
        yield state


def test_the_board_is_32_bit_arm_with_the_armv7_stack(site: Site) -> None:
    assert site.board.run(["uname", "-m"]).stdout.strip() == "armv7l"
    probe = site.board.run(
        [
            f"{VENV}/bin/python",
            "-c",
            "import json, platform, struct, importlib.util, importlib.metadata as m, agent, numpy, "
            "cv2, "
            "msgspec, paho.mqtt, cryptography, tflite_runtime.interpreter; "
            "print(json.dumps({'machine': platform.machine(), 'bits': struct.calcsize('P') * 8, "
            "'numpy': numpy.__version__, 'tflite': m.version('tflite-runtime'), "
            "'onnxruntime': importlib.util.find_spec('onnxruntime') is not None, "
            "'litert': importlib.util.find_spec('ai_edge_litert') is not None, "
            "'edgefleet': str(m.distribution('edgefleet').locate_file('')), "
            "'agent': agent.__file__}))",
        ],
        work=site.work,
        timeout=SLOW,
    )
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["machine"] == "armv7l" and seen["bits"] == 32, seen
    # tflite-runtime 2.14 is built against numpy 1 (docs/hil.md).
    assert seen["numpy"].startswith("1.") and seen["tflite"] == "2.14.0", seen
    # PyPI has no armv7l onnxruntime or ai-edge-litert: the LiteRT backend below runs through
    # its tflite_runtime fallback.
    assert seen["onnxruntime"] is False and seen["litert"] is False, seen
    assert seen["edgefleet"].startswith(f"{VENV}/") and seen["agent"].startswith(f"{VENV}/lib/")


def test_rpi_armv7_agent_serves_a_signed_tflite_model_and_refuses_onnx(site: Site) -> None:
    device_id, credentials = enroll(site, "pi", device_class="rpi-armv7", tags=["armhf-hil"])
    video = write_video(site.work / "clip.avi", 40)
    config = agent_config(
        site,
        name="pi",
        credentials=credentials,
        header=PROFILE,
        input_table=f'[input]\ntype = "video"\npath = "{site.board_path(video)}"\nloop = true',
    )
    agent = BoardAgent(site, config)
    site.agents.append(agent)
    assert site.client.get_device(device_id)["device_class"] == "rpi-armv7"
    # The server does not send an ONNX artifact to the class at all.
    refused = assign(site, device_id, "digits@1.0.0")
    assert refused["incompatible"] == [device_id], refused

    assign(site, device_id, "digits-tfl@1.0.0")
    wait_until(
        lambda: running(site, device_id) == "digits-tfl@1.0.0", SLOW, "the TFLite model", every=1
    )
    wait_until(
        lambda: served(site, device_id, "digits-tfl@1.0.0") >= 40,
        SLOW,
        "video frames served by the TFLite model, in the server's telemetry",
        every=1,
    )
    assert any(e.get("model") == "digits-tfl@1.0.0" for e in agent.logged("model committed"))
    rows = site.client.device_telemetry(device_id, limit=50)
    assert any((row.get("system") or {}).get("rss_mb", 0) > 0 for row in rows), rows[:2]
    assert agent.stop() == 0, agent.log.read_text()[-2000:]


def test_an_onnx_artifact_that_reaches_the_device_is_refused_there(site: Site) -> None:
    """A class the server has no profile for is not restricted, so the ONNX artifact reaches
    the device; its rpi-armv7 profile refuses it with one line, reported to the server."""
    device_id, credentials = enroll(site, "lab", device_class=None, tags=["armhf-hil"])
    images = site.work / "lab-images"
    digits_images(images, 2)
    config = agent_config(
        site,
        name="lab",
        credentials=credentials,
        header=PROFILE + 'device_class = "lab-pi"\n',
        input_table=f'[input]\ntype = "folder"\npath = "{site.board_path(images)}"',
    )
    agent = BoardAgent(site, config)
    site.agents.append(agent)
    sent = assign(site, device_id, "digits@1.0.0")
    assert sent["devices"] == [device_id] and not sent["incompatible"], sent
    wait_until(lambda: bool(agent.logged("update failed")), SLOW, "the ONNX refusal", every=1)
    (failed,) = agent.logged("update failed")
    expected = (
        "digits@1.0.0 is in onnx format and this device runs only tflite artifacts "
        "(its profile's engine.backends)"
    )
    assert failed["model"] == "digits@1.0.0" and expected in failed["error"], failed
    wait_until(
        lambda: expected in (site.client.get_device(device_id).get("last_error") or ""),
        SLOW,
        "the refusal reported to the server",
        every=1,
    )
    assert running(site, device_id) is None
    assert agent.stop() == 0, agent.log.read_text()[-2000:]
