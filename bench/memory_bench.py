"""Where the agent's memory goes: RSS above "bare runtime + model", step by step (issue #16).

Two kinds of fresh process, each measured from ``/proc/PID/smaps_rollup`` (Rss, Anonymous):

- **bare**: the interpreter imports numpy and the runtime, loads the model with the agent's
  engine options and runs it N times: what any program serving this model pays.
- **agent**: the same imports, then the agent's own, one step at a time in the order
  ``edgefleet agent run`` makes them (CLI, config, logging, MQTT client, outbox, inputs,
  the service module), then ``AgentService`` built and run (HTTP input, the model committed in
  its data dir, the broker unreachable: it serves offline), then N ``POST /infer``. Each step's
  RSS increase is its cost; the end state minus bare is what the issue's target measures.

A second agent run with ``tracemalloc`` on names the Python-heap allocations by package (the
tracer's own memory is left out: it is not in the first run). ``/proc/PID/smaps`` at the end
splits the RSS into the shared libraries' pages by file and the anonymous memory (heap, thread
stacks, arenas).

    PYTHONPATH=. python bench/memory_bench.py [--runs 200] [--repeat 3] [--json out.json]

The same script runs inside the emulated arm64 board (``hil.arm64``); only the numbers change.
Emulated timings mean nothing, resident memory does (the board runs aarch64 libraries).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: The checkout whose agent is measured (``--code``: e.g. main's, for a before/after pair).
CODE = [ROOT]

#: Run in the child: imports step by step, printing one JSON line per step, then (for the
#: agent) serves until stdin closes. Only the stdlib before the first step.
PROBE = r"""
import json, os, sys
mode, model_dir, runs, trace = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
for name in filter(None, os.environ.get("MEMBENCH_BLOCK", "").split(",")):
    sys.modules[name] = None  # what removing it would save (e.g. _hashlib: no OpenSSL hashes)
def exec_anon(path):
    # Anonymous executable memory: qemu-user's translation cache under emulation, 0 natively.
    total, counting = 0, False
    with open(path) as fh:
        for line in fh:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                counting = len(parts) < 6 and "x" in parts[1]
            elif counting and first == "Rss:":
                total += int(line.split()[1])
    return total / 1024
def rollup():
    out = {}
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:", "Anonymous:", "Private_Dirty:"):
                out[parts[0][:-1]] = int(parts[1]) / 1024
    out["Exec_anon"] = exec_anon("/proc/self/smaps")
    return out
if trace:
    import tracemalloc
    tracemalloc.start(1)
def step(name):
    rec = {"step": name, **rollup(), "modules": len(sys.modules)}
    if trace:
        rec["py_heap"] = tracemalloc.get_traced_memory()[0] / 2**20
    print(json.dumps(rec), flush=True)
if mode == "agent":  # as `edgefleet agent run` does first (absent in older checkouts)
    try:
        from agent.memory import cap_malloc_arenas
        cap_malloc_arenas()  # glibc arenas capped at 2 unless MALLOC_ARENA_MAX is set
    except ImportError:
        pass
step("interpreter")
import numpy as np
step("numpy")
manifest = json.load(open(os.path.join(model_dir, "manifest.json")))
fmt = manifest["format"]
if fmt == "onnx":
    import onnxruntime
else:
    try:
        import ai_edge_litert.interpreter
    except ImportError:
        import tflite_runtime.interpreter
step("runtime import")
if mode == "bare":
    # The agent's engine options (agent.engine.onnx / litert, threads = 1), no agent code.
    spec = manifest["inputs"][0]
    x = np.load(sys.argv[5])  # the tensor the agent is sent
    path = os.path.join(model_dir, manifest["model_file"])
    if fmt == "onnx":
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        so.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        s = onnxruntime.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        run = lambda: s.run(None, {spec["name"]: x})
    else:
        mod = sys.modules.get("ai_edge_litert.interpreter")
        mod = mod or sys.modules["tflite_runtime.interpreter"]
        it = mod.Interpreter(model_path=path, num_threads=1)
        it.allocate_tensors()
        index = it.get_input_details()[0]["index"]
        def run():
            it.set_tensor(index, x)
            it.invoke()
    run()
    step("model loaded + 1 run")
    for _ in range(runs - 1):
        run()
    step(f"after {runs} runs")
    sys.exit(0)
try:  # as `edgefleet agent run` does first (agent.deferred; absent in older checkouts)
    from agent.deferred import defer_unused
    deferred = defer_unused()
except ImportError:
    deferred = []
tag = lambda name: " (deferred: not loaded)" if name in deferred else ""
import hashlib
step("hashlib (libcrypto via _hashlib)" + tag("hashlib"))
import ssl
step("ssl (+libssl, _ssl)" + tag("ssl"))
import urllib.request, http.client, email.message
step("urllib.request, http.client, email" + tag("urllib.request"))
import http.server
step("http.server")
import paho.mqtt.client
step("paho-mqtt (its own modules)")
import msgspec, msgspec.json, msgspec.msgpack
step("msgspec")
import sqlite3
sqlite3.connect(":memory:").execute("select 1")
step("sqlite3")
import zipfile, gzip, lzma, bz2
step("zipfile, gzip, lzma, bz2 (shutil, np.load)")
import logging, argparse, decimal, uuid, tomllib, importlib.resources
import json, queue, threading, selectors, dataclasses, shutil, tempfile
step("other stdlib (logging, argparse, decimal...)")
import edgefleet.cli
from pathlib import Path
from agent.config import load_config
config = load_config(Path(sys.argv[5]))
if deferred:
    from agent.deferred import load_for
    load_for([config.server_url, config.mqtt.url])
from edgefleet.logs import configure_logging
configure_logging(config.log_level)
step("contract, configs, profile, CLI (our code)")
import agent.service, agent.faults
step("agent modules (our code)")
if config.trusted_keys:  # what the signature check imports here (older checkouts: at build)
    import edgefleet.signing, subprocess
    try:
        import agent.signature  # cryptography in a child process
    except ImportError:
        pass
    step("signature check (trusted_keys: signed models)")
import threading
service = agent.service.AgentService(config)
step("AgentService built")
stop = threading.Event()
worker = threading.Thread(target=service.run, args=(stop,), kwargs={"on_running": print})
worker.start()
sys.stdin.read()  # the parent measures this process from outside, then closes stdin
stop.set()
worker.join(30)
"""

AGENT_CONFIG = """device_id = "membench"
server_url = "http://127.0.0.1:9"
token = "t"
data_dir = "{data}"
trusted_keys = {keys}
log_level = "warning"
[mqtt]
url = "mqtt://127.0.0.1:9"
connect_wait_s = 0.2
[input]
type = "http"
host = "127.0.0.1"
port = {port}
timeout_s = 300
"""


def smaps_rollup(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:", "Anonymous:", "Private_Dirty:"):
                out[parts[0][:-1]] = int(parts[1]) / 1024
    out["Exec_anon"] = smaps_by_file(pid).get("[exec anon]", 0.0)
    return out


def smaps_by_file(pid: int) -> dict[str, float]:
    """RSS (MB) per mapped file (basename); anonymous regions as ``[anon]``, ``[heap]``, and
    ``[thread stacks]`` (anonymous, 8 MiB: glibc's default stack)."""
    totals: dict[str, float] = {}
    name = "[anon]"
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                name = Path(parts[5]).name if len(parts) > 5 else "[anon]"
                if len(parts) > 5 and parts[5].startswith("["):
                    name = parts[5]
                if len(parts) < 6 and "x" in parts[1]:
                    name = "[exec anon]"  # qemu-user's translation cache (emulated board)
            elif first == "Size:" and name == "[anon]" and int(line.split()[1]) == 8192:
                name = "[thread stacks]"
            elif first == "Rss:":
                totals[name] = totals.get(name, 0.0) + int(line.split()[1]) / 1024
    return totals


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {
        "PYTHONPATH": str(CODE[0]),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        **extra,
    }


def bare(model: Path, tensor: Path, runs: int, env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "bare", str(model), str(runs), "0", str(tensor)],
        capture_output=True,
        text=True,
        cwd=CODE[0],
        env=_env(env),
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def agent(
    model: Path,
    payload: bytes,
    runs: int,
    env: dict[str, str],
    *,
    trace: bool = False,
    keys: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """Steps of a real agent process, then its RSS once serving, after 1 and after N requests."""
    from agent.store import DataDir
    from edgefleet.artifact import load_artifact

    ref = load_artifact(model).ref
    with tempfile.TemporaryDirectory() as tmp:
        data = DataDir(Path(tmp) / "data")
        shutil.copytree(model, data.artifact_dir(ref))
        data.write_pointer(ref)
        port = _free_port()
        config = Path(tmp) / "agent.toml"
        trusted = json.dumps([str(k) for k in keys])
        config.write_text(AGENT_CONFIG.format(data=Path(tmp) / "data", port=port, keys=trusted))
        argv = [sys.executable, "-c", PROBE, "agent", str(model), str(runs), str(int(trace))]
        proc = subprocess.Popen(
            [*argv, str(config)],
            cwd=CODE[0],
            env=_env(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        steps: list[dict[str, Any]] = []
        base = f"http://127.0.0.1:{port}"
        try:
            while not steps or steps[-1]["step"] != "AgentService built":
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError("the probe ended early")
                if line.startswith("{"):
                    steps.append(json.loads(line))
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(f"{base}/healthz", timeout=2).read()  # noqa: S310
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the agent did not become ready") from None
                    time.sleep(0.2)
            steps.append({"step": "serving (model loaded, threads up)", **smaps_rollup(proc.pid)})
            for n in range(runs):
                request = urllib.request.Request(f"{base}/infer", data=payload)  # noqa: S310
                urllib.request.urlopen(request, timeout=60).read()  # noqa: S310 (loopback)
                if n == 0:
                    steps.append({"step": "after 1 request", **smaps_rollup(proc.pid)})
            time.sleep(0.5)
            steps.append({"step": f"after {runs} requests", **smaps_rollup(proc.pid)})
            threads = len(os.listdir(f"/proc/{proc.pid}/task"))
            by_file = smaps_by_file(proc.pid)
        finally:
            proc.stdin.close()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"steps": steps, "threads": threads, "by_file": by_file}


def median_steps(samples: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for i, first in enumerate(samples[0]):
        row = {"step": first["step"]}
        for key in ("Rss", "Pss", "Anonymous", "Exec_anon", "py_heap"):
            values = sorted(s[i][key] for s in samples if key in s[i])
            if values:
                row[key] = values[len(values) // 2]
        out.append(row)
    return out


def show(rows: list[dict[str, Any]], title: str) -> None:
    print(f"  {title}")
    prev: dict[str, Any] | None = None
    for row in rows:
        delta = row["Rss"] - prev["Rss"] if prev else 0.0
        anon = row["Anonymous"] - prev["Anonymous"] if prev else 0.0
        heap = f"  py heap {row['py_heap']:6.1f}" if "py_heap" in row else ""
        print(
            f"    {row['step']:44} RSS {row['Rss']:6.1f} MB  +{delta:5.1f}  (anon +{anon:5.1f})"
            f"{heap}"
        )
        prev = row


def on_arm64(args: argparse.Namespace) -> int:
    """This bench, run by the board's Python on a copy of the code, with a model built here
    (the board has the agent's wheels only: no onnx to build one)."""
    from hil.arm64.rootfs import WORK, find_board

    board = find_board()
    if board is None:
        print("no cached arm64 board: python -m hil.arm64 build (tens of minutes)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for part in ("agent", "edgefleet", "firmware_configs", "bench"):
            shutil.copytree(
                (ROOT if part == "bench" else CODE[0]) / part,  # this bench, the code measured
                work / "code" / part,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        model = args.model
        if model is None:
            from tests.agent.factory import conv_artifact

            model = conv_artifact(work / "model", size=128, channels=16)
        else:
            model = Path(shutil.copytree(model, work / "model"))
        argv = ["python3", f"{WORK}/code/bench/memory_bench.py", "--model", f"{WORK}/model"]
        argv += ["--runs", str(args.runs), "--repeat", str(args.repeat)]
        argv += [f"--env={kv}" for kv in args.env] + (["--trace"] if args.trace else [])
        if args.json:
            argv += ["--json", f"{WORK}/out.json"]
        done = board.run(argv, work=work, env={"PYTHONPATH": f"{WORK}/code"}, timeout=3600)
        print(done.stdout, end="")
        if args.json:
            shutil.copy(work / "out.json", args.json)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="requests / runs per process")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per figure")
    parser.add_argument("--model", type=Path, help="an artifact directory (default: built here)")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="the checkout whose agent is measured"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="extra environment for both processes (default MALLOC_ARENA_MAX=2, as the unit; "
        "K= unsets K); "
        "MEMBENCH_BLOCK=mod1,mod2 makes those modules unimportable (what removing them saves)",
    )
    parser.add_argument(
        "--arm64",
        action="store_true",
        help="run this bench inside the cached emulated arm64 board (hil.arm64; never builds it)",
    )
    parser.add_argument(
        "--signed",
        action="store_true",
        help="sign the model and give the agent its trusted key (as a fleet deploys)",
    )
    parser.add_argument(
        "--trace", action="store_true", help="one more agent run with tracemalloc (Python heap)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    CODE[0] = args.code.resolve()
    if args.arm64:
        return on_arm64(args)
    env = {"MALLOC_ARENA_MAX": "2", **dict(kv.split("=", 1) for kv in args.env)}
    env = {k: v for k, v in env.items() if v}  # K= unsets (e.g. glibc's default arenas)
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tests.agent.factory import conv_artifact

            model = conv_artifact(Path(tmp) / "conv", size=128, channels=16)
        spec = json.loads((model / "manifest.json").read_text())["inputs"][0]
        shape = [d if isinstance(d, int) else 1 for d in spec["shape"]]
        tensor = Path(tmp) / "x.npy"
        np.save(tensor, np.random.default_rng(0).random(shape).astype(spec["dtype"]))
        payload = tensor.read_bytes()
        keys: tuple[Path, ...] = ()
        if args.signed:  # as a fleet deploys: a signed manifest, the agent's trusted_keys set
            from edgefleet.signing import generate_keypair
            from tests.utils.artifacts import sign_artifact

            model = Path(shutil.copytree(model, Path(tmp) / "signed"))
            generate_keypair(Path(tmp) / "key.pem", Path(tmp) / "key.pub")
            sign_artifact(model, (Path(tmp) / "key.pem").read_bytes())
            keys = (Path(tmp) / "key.pub",)
        bare_rows = median_steps([bare(model, tensor, args.runs, env) for _ in range(args.repeat)])
        agents = [agent(model, payload, args.runs, env, keys=keys) for _ in range(args.repeat)]
        agent_rows = median_steps([a["steps"] for a in agents])
        traced = (
            agent(model, payload, args.runs, env, trace=True, keys=keys)["steps"]
            if args.trace
            else None
        )
    show(bare_rows, "bare runtime + model (median of fresh processes)")
    show(agent_rows, "agent (median of fresh processes)")
    if traced is not None:
        print("  Python heap (tracemalloc, one traced run; RSS there includes the tracer):")
        heap = [r for r in traced if "py_heap" in r]
        for prev, row in zip(heap, heap[1:], strict=False):
            print(f"    {row['step']:44} +{row['py_heap'] - prev['py_heap']:5.2f} MB")
    over = agent_rows[-1]["Rss"] - bare_rows[-1]["Rss"]
    jit = agent_rows[-1].get("Exec_anon", 0.0) - bare_rows[-1].get("Exec_anon", 0.0)
    if agent_rows[-1].get("Exec_anon", 0.0) > 1:
        print(
            f"  executable anonymous memory (qemu's translation cache): bare "
            f"{bare_rows[-1]['Exec_anon']:.1f} MB, agent {agent_rows[-1]['Exec_anon']:.1f} MB; "
            f"agent over bare without it: +{over - jit:.1f} MB"
        )
    model_mb = bare_rows[-2]["Rss"] - bare_rows[-3]["Rss"]
    steps = {r["step"]: r["Rss"] for r in agent_rows}
    load = steps["serving (model loaded, threads up)"] - steps["AgentService built"]
    print(
        f"  agent over bare runtime + model: +{over:.1f} MB (target <= 15); the model's session "
        f"+{model_mb:.1f} MB in bare, serving start (model + threads + self-test) +{load:.1f} MB"
    )
    by_file = agents[len(agents) // 2]["by_file"]
    top = sorted(by_file.items(), key=lambda kv: -kv[1])[:25]
    print("  agent RSS by mapping (MB): " + ", ".join(f"{k} {v:.1f}" for k, v in top))
    print(f"  threads: {agents[0]['threads']}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"bare": bare_rows, "agent": agent_rows, "by_file": by_file, "over_mb": over},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
