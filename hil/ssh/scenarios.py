"""The scenarios ``edgefleet hil run`` plays on a board, and the numbers each brings back.

Every scenario runs the real agent on the board with :mod:`hil.probe` sampling it (RSS,
descriptors, threads, the board's thermal zones), and ends by timing the models it served
with ``edgefleet agent bench`` on the board once the agent has stopped (the agent engine and
the bare runtime, interleaved: the device's real latency on real hardware; under emulation
the numbers are reported but mean nothing).

- ``update``: serve FROM, then an update to TO; the time from assignment to TO running; TO
  serves ``hold_s`` (20 s) more so the probe samples it serving.
- ``outage``: serve FROM, stop our server (and its broker) for ``--outage`` seconds, start it
  again; the telemetry the agent kept meanwhile must arrive, each report once.
- ``soak``: serve for ``--duration`` with an update every tenth of it, FROM and TO in turn;
  the slopes of RSS, descriptors and threads after a warm-up (target: flat).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hil import probe
from hil.ssh.errors import HilError

if TYPE_CHECKING:
    from hil.ssh.runner import Context

#: Telemetry interval the runner configures (``[telemetry] interval_s``).
TELEMETRY_S = 2.0


def _wait(what: str, check: Callable[[], bool], timeout: float, ctx: Context) -> float:
    """Poll ``check`` until true; the seconds it took. The agent dying ends the wait."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        if not ctx.remote.alive("agent"):
            log = ctx.remote.board.get(ctx.remote.path("agent.log"), limit=1 << 20)
            raise HilError(f"the agent on the board exited while waiting for {what}: "
                           f"{log.decode(errors='replace')[-600:]}")  # fmt: skip
        time.sleep(1.0)
    raise HilError(f"{what}: not within {timeout:.0f} s")


def _running(ctx: Context) -> str | None:
    running = ctx.client.get_device(ctx.device_id).get("running") or {}
    return f"{running['name']}@{running['version']}" if running else None


def _telemetry(ctx: Context) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = ctx.client.device_telemetry(ctx.device_id, limit=500)
    return rows


def _served(ctx: Context, ref: str) -> int:
    total = 0
    for row in _telemetry(ctx):
        model = row.get("model") or {}
        if f"{model.get('name')}@{model.get('version')}" == ref:
            total += int(row.get("inference_count") or 0)
    return total


def _assign(ctx: Context, ref: str) -> None:
    name, version = ref.split("@", 1)
    ctx.client.assign(name, version, device_ids=[ctx.device_id])


def _serve(ctx: Context, ref: str) -> float:
    """Assign ``ref`` and wait until it runs and its telemetry is stored: the seconds."""
    _assign(ctx, ref)
    took = _wait(f"{ref} running", lambda: _running(ctx) == ref, ctx.options.step_timeout_s, ctx)
    took += _wait(f"telemetry of {ref}", lambda: _served(ctx, ref) > 0, 120, ctx)
    ctx.options.say(f"{ref} running on the board ({took:.1f} s)")
    ctx.served.append(ref)
    return took


def _start(ctx: Context, max_s: float) -> None:
    pid = ctx.remote.start("agent", ctx.agent_cmd, max_s=max_s)
    ctx.remote.start(
        "probe",
        f"python3 {ctx.remote.path('probe.py')} --pid {pid} --child --every 2 "
        f"--out {ctx.remote.path('probe.jsonl')}",
        max_s=max_s,
    )


def _finish(ctx: Context, *, warmup_s: float) -> dict[str, Any]:
    """Stop the agent (TERM: a clean exit is part of the result), time the models it served,
    bring the probe's samples back."""
    ctx.remote.stop("probe", wait_s=10)  # first: a sample of the agent shutting down is noise
    out: dict[str, Any] = {"agent_stopped_on_term": ctx.remote.stop("agent", wait_s=60)}
    rows = probe.read_rows_text(
        ctx.remote.board.get(ctx.remote.path("probe.jsonl")).decode(errors="replace")
    )
    out["agent"] = probe.trend(rows, warmup_s=warmup_s, keys=("rss_mb", "fds", "threads"))
    temps: dict[str, dict[str, float]] = {}
    for row in rows:
        for zone, value in (row.get("temp_c") or {}).items():
            seen = temps.setdefault(zone, {"min": value, "max": value})
            seen["min"], seen["max"] = min(seen["min"], value), max(seen["max"], value)
    out["temperature_c"] = temps
    out["latency"] = {ref: _bench(ctx, ref) for ref in dict.fromkeys(ctx.served)}
    return out


def _bench(ctx: Context, ref: str) -> dict[str, Any]:
    """``edgefleet agent bench`` on the board for one artifact the agent kept."""
    name, version = ref.split("@", 1)
    artifact = ctx.remote.path(f"data/artifacts/{name}/{version}")
    done = ctx.remote.board.run(
        f"test -d {artifact} || {{ echo 'not kept on the board' >&2; exit 4; }}; "
        f"{ctx.remote.path('venv/bin/edgefleet')} agent bench {artifact} --json "
        f"--runs {ctx.options.bench_runs}",
        timeout=ctx.options.step_timeout_s * 2,
        check=False,
    )
    text = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not text:
        return {"error": done.stderr.decode(errors="replace").strip()[-300:] or "no output"}
    result: dict[str, Any] = json.loads(text[-1])
    return result


def update(ctx: Context) -> dict[str, Any]:
    first, second = ctx.models
    _start(ctx, max_s=ctx.options.step_timeout_s * 6)
    out: dict[str, Any] = {"first_model_s": round(_serve(ctx, first), 1)}
    out["update_s"] = round(_serve(ctx, second), 1)
    time.sleep(ctx.options.hold_s)  # TO serving for a while: what the probe's numbers are about
    out["running"] = _running(ctx)
    # The trend leaves out start-up (imports, model load): until the first model served.
    out.update(_finish(ctx, warmup_s=out["first_model_s"]))
    out["ok"] = out["running"] == second and bool(out["agent_stopped_on_term"])
    return out


def outage(ctx: Context) -> dict[str, Any]:
    server = ctx.server
    if server is None:
        raise HilError("the outage scenario needs the runner's own server")
    first = ctx.models[0]
    outage_s = ctx.options.outage_s
    _start(ctx, max_s=ctx.options.step_timeout_s * 4 + outage_s)
    out: dict[str, Any] = {"first_model_s": round(_serve(ctx, first), 1)}
    before = max(int(row["seq"]) for row in _telemetry(ctx))
    server.stop()
    ctx.options.say(f"server and broker stopped for {outage_s:.0f} s")
    time.sleep(outage_s)
    server.start()  # the same ports and data: the client reconnects on its next request
    expected = max(1, int(outage_s / TELEMETRY_S) - 2)

    def drained() -> bool:
        return len([r for r in _telemetry(ctx) if int(r["seq"]) > before]) >= expected

    out["drain_s"] = round(_wait("telemetry kept during the outage", drained, 300, ctx), 1)
    rows = _telemetry(ctx)
    seqs = [int(r["seq"]) for r in rows]
    out["telemetry_after_outage"] = len([s for s in seqs if s > before])
    out["duplicates"] = len(seqs) - len(set(seqs))
    out["outage_s"] = outage_s
    out.update(_finish(ctx, warmup_s=out["first_model_s"]))
    out["ok"] = out["duplicates"] == 0 and bool(out["agent_stopped_on_term"])
    return out


def soak(ctx: Context) -> dict[str, Any]:
    duration = ctx.options.duration_s
    _start(ctx, max_s=duration + ctx.options.step_timeout_s * 4)
    started = time.monotonic()
    out: dict[str, Any] = {"first_model_s": round(_serve(ctx, ctx.models[0]), 1)}
    every = max(30.0, duration / 10)
    updates, turn = 0, 1
    while time.monotonic() - started < duration:
        time.sleep(min(every, max(0.0, duration - (time.monotonic() - started))))
        if time.monotonic() - started >= duration:
            break
        _serve(ctx, ctx.models[turn])
        updates, turn = updates + 1, 1 - turn
    out["updates"] = updates
    out["duration_s"] = round(time.monotonic() - started, 1)
    warmup = min(300.0, duration / 5)
    out.update(_finish(ctx, warmup_s=warmup))
    rss = (out["agent"].get("rss_mb") or {}).get("slope_per_h")
    out["flat"] = rss is not None and rss < probe.FLAT_RSS_MB_PER_H
    out["ok"] = bool(out["agent_stopped_on_term"])
    return out


SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "update": update,
    "outage": outage,
    "soak": soak,
}
