"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a live server:
sign in as a viewer and as an operator, each view, one chart's numbers against the API's answer,
and a rollout created, paused, resumed and aborted from the page; no script error, no CSP
violation on the way. Skipped where Chromium or Playwright is missing, except under
``EDGEFLEET_REQUIRE_SERVICES=1`` (CI), where that is a failure."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.utils.artifacts import signed_digits_bundles
from tests.utils.required import missing
from tests.utils.server import live_server

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TAG = "browser-lab"
WAIT_MS = 20_000


def _missing(what: str) -> None:
    missing(f"{what} is missing")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (pip install playwright; the browser is the system chromium)")
    if CHROMIUM is None:
        _missing("chromium (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A live server with two signed digits versions, three devices on 1.0.0 and an hour of
    their telemetry; a viewer and an operator token."""
    from sqlmodel import Session

    from fleet_server.client.api import FleetClient
    from fleet_server.models import TelemetryRow
    from fleet_server.models.types import utcnow

    tmp = tmp_path_factory.mktemp("dash")
    bundles, key = signed_digits_bundles(tmp / "bundles", ["1.0.0", "2.0.0"])
    with live_server(tmp, trusted_keys=[key]) as server:
        client = FleetClient(server.url, server.token)
        for bundle in bundles:
            client.push_model(bundle)
        devices = [f"browser-{i}" for i in range(3)]
        for device in devices:
            client.add_device(device, device_class="rpi4", tags=[TAG])
        client.assign("digits", "1.0.0", tag=TAG)
        now = utcnow()
        rows = [
            TelemetryRow(
                device_id=device, seq=seq, ts=now - timedelta(minutes=60 - seq),
                received_at=now - timedelta(minutes=60 - seq), interval_s=60.0,
                model={"name": "digits", "version": "1.0.0"}, inference_count=100 + seq,
                error_count=seq % 3, latency_ms={"p50": 1.0, "p95": 2.0 + (seq % 7) / 2 + i},
            )
            for i, device in enumerate(devices)
            for seq in range(60)
        ]  # fmt: skip
        with Session(server.runtime.engine) as session:
            session.add_all(rows)
            session.commit()
        viewer = client.create_token("dash-viewer", "viewer")["token"]
        operator = client.create_token("dash-operator", "operator")["token"]
        try:
            yield {"url": server.url, "client": client, "viewer": viewer, "operator": operator}
        finally:
            client.close()


@pytest.fixture
def page(browser: Any, fleet: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context()
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    opened.on(
        "console",
        lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    opened.set_default_timeout(WAIT_MS)
    opened.problems = problems
    try:
        yield opened
    finally:
        context.close()


def _sign_in(page: Any, url: str, token: str) -> None:
    page.goto(f"{url}/dashboard")
    assert page.text_content("#status") == "not signed in"
    page.fill("#token", token)
    page.click("#signin")
    _expect(page.locator("#status")).to_contain_text("updated")


def _expect(locator: Any) -> Any:
    """Playwright's waiting assertions (they run in an isolated world: the page's CSP, which
    forbids eval, does not stop them as it stops ``wait_for_function``)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)  # a loaded CI machine: its 5 s default is too short
    return expect(locator)


def _errors(page: Any) -> list[str]:
    # A 4xx the page asked for on purpose (a refused action) is logged by Chromium as a failed
    # resource load: not a script error.
    return [p for p in page.problems if "Failed to load resource" not in p]


def test_a_viewer_sees_every_view_and_no_button(page: Any, fleet: dict[str, Any]) -> None:
    _sign_in(page, fleet["url"], fleet["viewer"])
    assert page.text_content("#status").startswith("viewer;")
    page.wait_for_selector("#devices tbody tr")
    assert page.locator("#devices tbody tr").count() == 3
    versions = page.text_content("#versions")
    assert "digits@1.0.0" in versions and "digits@2.0.0" in versions  # registered, not running
    page.fill("#filter", "browser-1")
    _expect(page.locator("#devices tbody tr")).to_have_count(1)
    assert page.locator("#view button:visible, #view form:visible").count() == 0
    assert page.locator("form[data-form='enroll']").is_hidden()
    # Device view, by its link; then the model view by the version's link.
    page.click("#devices a[href='#/device/browser-1']")
    page.wait_for_selector("h2:has-text('Device browser-1')")
    page.wait_for_selector("svg path.line")
    assert page.locator("#view button, #view form").count() == 0
    page.goto(f"{fleet['url']}/dashboard#/model/digits/2.0.0")
    page.wait_for_selector("h2:has-text('Model digits@2.0.0')")
    assert page.locator("#view button, #view form").count() == 0
    assert "verified" in page.text_content("table.facts")
    page.click("#logout")
    assert page.evaluate("sessionStorage.getItem('edgefleet.token')") is None
    assert page.text_content("#status") == "signed out"
    # A wrong token: the page says why and signs out.
    page.fill("#token", "wrong")
    page.click("#signin")
    _expect(page.locator("#status")).to_contain_text("error: 401")
    assert page.evaluate("sessionStorage.getItem('edgefleet.token')") is None
    assert _errors(page) == []


def test_the_latency_chart_draws_what_the_api_answered(page: Any, fleet: dict[str, Any]) -> None:
    answers: list[Any] = []
    page.on(
        "response",
        lambda r: answers.append(r.json()) if "/api/v1/charts/latency" in r.url else None,
    )
    _sign_in(page, fleet["url"], fleet["viewer"])
    page.goto(f"{fleet['url']}/dashboard#/model/digits/1.0.0")
    path = page.wait_for_selector("figure.chart path.line[data-series='digits@1.0.0']")
    drawn = path.get_attribute("data-points")
    chart = answers[-1]
    (series,) = chart["series"]
    assert series["version"] == "1.0.0" and len(series["points"]) >= 5
    pairs = [item.rsplit(":", 1) for item in drawn.split(",")]
    assert [(t, float(v) if v else None) for t, v in pairs] == [
        (p["t"], p["p95_mean"]) for p in series["points"]
    ]
    # The API's numbers are the telemetry's: every interval of the hour is counted once.
    assert sum(p["intervals"] for p in series["points"]) == 3 * 60
    # Drawn: one point per bucket, left to right.
    d = path.get_attribute("d")
    assert d.count("L") + d.count("M") == len(series["points"])
    assert _errors(page) == []


def test_an_operator_runs_a_rollout_from_the_page(page: Any, fleet: dict[str, Any]) -> None:
    client = fleet["client"]
    _sign_in(page, fleet["url"], fleet["operator"])
    assert page.text_content("#status").startswith("operator;")
    page.goto(f"{fleet['url']}/dashboard#/model/digits/2.0.0")
    # Locators, not element handles: they find the element again if a refresh redrew it.
    form = page.locator("form[data-form='rollout']")
    form.locator("input[name='tags']").fill(TAG)
    form.locator("input[name='canary_percent']").fill("34")
    form.locator("input[name='batches']").fill("100")
    form.locator("button[type='submit']").click()
    page.wait_for_selector("h2:has-text('Rollout')")
    rollout_id = int(page.url.rsplit("/", 1)[1])
    made = client.get_rollout(rollout_id)
    assert (made["model"], made["version"], made["state"]) == ("digits", "2.0.0", "running")
    assert made["selector"]["tags"] == [TAG] and made["strategy"]["batches"] == [100.0]
    heading = page.text_content("h2")
    assert "digits 1.0.0 → 2.0.0" in heading  # what the devices ran before, not the name
    assert page.locator("svg.stages rect.track").count() == 2  # canary, batch 1

    def act(verb: str, state: str) -> None:
        page.click(f"button[data-verb='{verb}']")
        page.wait_for_selector(f"h2 .state.{state}")
        assert client.get_rollout(rollout_id)["state"] == state

    act("pause", "paused")
    assert page.locator("button[data-verb='pause']").count() == 0
    act("resume", "running")
    # Abort asks first; cancelling leaves the rollout running.
    page.click("button[data-verb='abort']")
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-cancel")
    assert client.get_rollout(rollout_id)["state"] == "running"
    page.click("button[data-verb='abort']")
    page.fill("#confirm-reason", "stopped from the browser test")
    page.click("#confirm-ok")
    # Aborting: the devices are told to go back (these never answer, so it stays aborting).
    page.wait_for_selector("h2 .state.aborting")
    aborted = client.get_rollout(rollout_id)
    assert aborted["state"] == "aborting" and "stopped from the browser test" in aborted["reason"]
    assert page.locator("#view button[data-action='rollout']").count() == 0
    # Every action is in the audit log under the operator token's name.
    audit = client.audit(actor="dash-operator")
    paths = {(a["method"], a["path"]) for a in audit}
    for verb in ("pause", "resume", "abort"):
        assert ("POST", f"/api/v1/rollouts/{rollout_id}/{verb}") in paths
    assert ("POST", "/api/v1/rollouts") in paths
    assert _errors(page) == []


def test_an_operator_pins_tags_and_enrolls(page: Any, fleet: dict[str, Any]) -> None:
    client = fleet["client"]
    _sign_in(page, fleet["url"], fleet["operator"])
    page.goto(f"{fleet['url']}/dashboard#/device/browser-2")
    pin = page.locator("form[data-form='pin']")
    assert pin.locator("input[name='model']").input_value() == "digits"  # its desired model
    pin.locator("input[name='version']").fill("1.0.0")
    pin.locator("button[type='submit']").click()
    _expect(page.locator("#notice")).to_contain_text("pinned")
    assert client.get_device("browser-2")["pinned"] == {"name": "digits", "version": "1.0.0"}
    tags = page.locator("form[data-form='tags']")
    tags.locator("input[name='add']").fill("bench, lab-2")
    tags.locator("button[type='submit']").click()
    _expect(page.locator("#notice")).to_contain_text("tags")
    assert "bench" in client.get_device("browser-2")["tags"]
    page.locator("button[data-action='unpin']").click()
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-ok")
    _expect(page.locator("#notice")).to_contain_text("unpinned")
    assert client.get_device("browser-2")["pinned"] is None
    # Enrollment: created (the token shown once), then revoked after a confirmation.
    page.goto(f"{fleet['url']}/dashboard#/fleet")
    form = page.locator("form[data-form='enroll']:visible")
    form.locator("input[name='tags']").fill("enrolled")
    form.locator("button[type='submit']").click()
    _expect(page.locator("#notice")).to_contain_text("shown once")
    page.locator("button[data-action='enroll-revoke']").click()
    page.click("#confirm-ok")
    _expect(page.locator("#notice")).to_contain_text("revoked")
    assert all(t["state"] != "active" for t in client.list_enrollment_tokens())
    # A capture policy for one version; a bad value is refused with the server's one line.
    page.goto(f"{fleet['url']}/dashboard#/model/digits/1.0.0")
    capture = page.locator("form[data-form='capture']")
    capture.locator("input[name='random']").fill("0.05")
    capture.locator("input[name='max_per_hour']").fill("12")
    capture.locator("button[type='submit']").click()
    _expect(page.locator("#notice")).to_contain_text("capture policy of digits@1.0.0 set")
    policy = client.get_capture("digits", "1.0.0")["policy"]
    assert policy["random"] == 0.05 and policy["max_per_hour"] == 12
    capture.locator("input[name='max_per_hour']").fill("-1")
    capture.locator("input[name='max_per_hour']").evaluate("e => e.removeAttribute('min')")
    capture.locator("button[type='submit']").click()
    _expect(page.locator("#notice")).to_contain_text("422")
    assert page.locator("#notice.bad").count() == 1
    assert client.get_capture("digits", "1.0.0")["policy"]["max_per_hour"] == 12
    assert _errors(page) == []


def test_files_are_not_served_outside_the_list(fleet: dict[str, Any], tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    for name in ("views.mjs", "charts.mjs"):
        with urllib.request.urlopen(f"{fleet['url']}/dashboard/{name}") as r:  # noqa: S310
            assert r.headers["Content-Type"].startswith("text/javascript")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{fleet['url']}/dashboard/app.py")  # noqa: S310
