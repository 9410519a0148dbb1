"""``edgefleet agent run``, ``enroll``, ``infer`` and ``bench`` (standard library at module
level).

Exit codes: 0 ok, 2 bad configuration or arguments (one line on stderr), 1 runtime failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgefleet.contract import Manifest

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "agent", help="run the on-device agent", description="The on-device agent."
    )
    commands = parser.add_subparsers(dest="agent_command", metavar="ACTION", required=True)

    run = commands.add_parser("run", help="serve models, report telemetry, apply updates")
    run.add_argument("--config", required=True, type=Path, help="agent TOML config file")
    run.set_defaults(handler=run_command)

    enroll = commands.add_parser(
        "enroll",
        help="trade an enrollment token for this device's credentials",
        description="Ask the fleet server for a device id and credentials with an enrollment "
        "token from an operator, and write them (JSON, mode 0600) to --out; name that file as "
        "credentials_file in the agent config.",
    )
    enroll.add_argument("--server", required=True, metavar="URL", help="fleet server base URL")
    token = enroll.add_mutually_exclusive_group(required=True)
    token.add_argument("--enrollment-token", metavar="T", help="the enrollment token")
    token.add_argument(
        "--enrollment-token-file", type=Path, metavar="PATH", help="read it from a file"
    )
    enroll.add_argument("--out", required=True, type=Path, metavar="FILE", help="credentials file")
    enroll.add_argument("--device-id", metavar="ID", help="wanted id (default: server generates)")
    enroll.add_argument("--class", dest="device_class", metavar="C", help="hardware class")
    enroll.add_argument("--force", action="store_true", help="replace an existing --out file")
    enroll.set_defaults(handler=enroll_command)

    infer = commands.add_parser("infer", help="run an artifact on image or .npy files")
    infer.add_argument(
        "artifact", type=Path, metavar="MODEL", help="artifact directory, or a .onnx/.tflite file"
    )
    infer.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="image or .npy")
    infer.add_argument("--top-k", type=int, default=3, help="classes per result (default 3)")
    infer.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    infer.set_defaults(handler=infer_command)

    bench = commands.add_parser(
        "bench", help="agent engine vs the bare runtime on one model (same process, interleaved)"
    )
    bench.add_argument(
        "model", type=Path, metavar="MODEL_OR_ARTIFACT", help=".onnx / .tflite file or artifact"
    )
    bench.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    bench.add_argument("--runs", type=int, default=2000, help="timed calls per side (default 2000)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(handler=bench_command)


def _fail(err: Exception, code: int) -> int:
    """Print an error (one line per bad config field), each prefixed with the command."""
    for line in str(err).splitlines() or [type(err).__name__]:
        print(f"edgefleet agent: {line}", file=sys.stderr)
    return code


def run_command(args: argparse.Namespace) -> int:
    from agent.deferred import defer_unused, load_for
    from agent.memory import cap_malloc_arenas

    cap_malloc_arenas()  # before any thread exists (the runtime's, paho's, the agent's)

    # Before the agent's modules pull in paho, http.server, ...: ssl and urllib.request are
    # imported when first used (an https download, an mqtts broker), not at start.
    defer_unused()
    from agent.config import load_config
    from agent.errors import AgentConfigError, AgentError
    from edgefleet.logs import configure_logging

    try:
        config = load_config(args.config)
    except AgentConfigError as err:
        return _fail(err, EXIT_USAGE)
    configure_logging(config.log_level)
    load_for([config.server_url, config.mqtt.url])  # TLS configured: import ssl now
    from agent.faults import arm
    from agent.service import AgentService

    try:
        arm(os.environ)  # tests only: EDGEFLEET_AGENT_CRASH_AT (inert when unset)
    except AgentConfigError as err:
        return _fail(err, EXIT_USAGE)

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def announce(line: str) -> None:
        print(line, flush=True)

    try:
        service = AgentService(config)
        return service.run(stop, on_running=announce)
    except AgentConfigError as err:
        return _fail(err, EXIT_USAGE)
    except (AgentError, OSError) as err:
        return _fail(err, EXIT_RUNTIME)


def enroll_command(args: argparse.Namespace) -> int:
    from agent.config import read_token_file
    from agent.credentials import EnrollError, enroll, write_credentials
    from agent.errors import AgentConfigError

    try:
        secret = args.enrollment_token
        if args.enrollment_token_file is not None:
            secret = read_token_file(args.enrollment_token_file)
        if args.out.exists() and not args.force:
            raise EnrollError(f"{args.out} exists; pass --force to replace it")
        credentials = enroll(
            server_url=args.server,
            enrollment_token=secret,
            device_id=args.device_id,
            device_class=args.device_class,
        )
        write_credentials(args.out, credentials, force=args.force)
    except AgentConfigError as err:
        return _fail(err, EXIT_USAGE)
    except EnrollError as err:
        return _fail(err, EXIT_RUNTIME)
    except OSError as err:
        return _fail(OSError(f"cannot write {args.out}: {err.strerror or err}"), EXIT_RUNTIME)
    print(f"enrolled as {credentials.device_id}; credentials in {args.out}", flush=True)
    return EXIT_OK


def infer_command(args: argparse.Namespace) -> int:
    if args.top_k < 1 or not 1 <= args.threads <= 64:
        print("edgefleet agent infer: --top-k must be >= 1 and --threads 1-64", file=sys.stderr)
        return EXIT_USAGE
    from agent.engine.bare import bare_format

    if not args.artifact.is_dir() and bare_format(args.artifact) is None:
        print(
            f"edgefleet agent infer: {args.artifact} is not an artifact directory, "
            ".onnx or .tflite file",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from agent.engine import BackendOptions, load_model
    from agent.engine.bare import load_bare
    from agent.errors import AgentError, ModelLoadError
    from agent.inputs import InputItem
    from agent.pipeline import prepare
    from agent.plugin_config import ClassificationPostConfig
    from agent.state import Serving

    try:
        options = BackendOptions(threads=args.threads)
        if args.artifact.is_dir():
            model = load_model(args.artifact, options=options)
        else:
            model = load_bare(args.artifact, options)
            _say_assumed(model.manifest)
        post = None
        if model.manifest.task == "classification":
            post = ClassificationPostConfig(top_k=args.top_k)
        serving = Serving.of(model, post)
    except ModelLoadError as err:
        print(f"edgefleet agent infer: {err}", file=sys.stderr)
        return EXIT_RUNTIME
    failures = 0
    for path in args.inputs:
        result: dict[str, Any] = {"file": str(path)}
        try:
            job = prepare(InputItem(path.name, _read_input(path)), serving)
            outputs = model.infer({serving.preprocess.tensor.name: job.tensor})
            rows = serving.results(outputs, [job.geometry] * job.tensor.shape[0])
            result.update(rows[0] if len(rows) == 1 else {"results": rows})
        except (AgentError, OSError) as err:
            failures += 1
            result["error"] = str(err)
        print(json.dumps(result), flush=True)
    return EXIT_RUNTIME if failures else EXIT_OK


def _say_assumed(manifest: Manifest) -> None:
    """A bare model file has no preprocessing.json: say what images will be turned into."""
    pre = manifest.preprocessing
    if pre is None:
        note = "no image preprocessing could be guessed: pass .npy tensors"
    else:
        size = f"{pre.resize.width}x{pre.resize.height}" if pre.resize else "as is"
        note = f"assuming {pre.color} 0..1 {pre.layout} {size} (no preprocessing.json)"
    print(f"edgefleet agent infer: {manifest.model_file}: {note}", file=sys.stderr)


def bench_command(args: argparse.Namespace) -> int:
    if not 1 <= args.threads <= 64 or not 10 <= args.runs <= 10_000_000:
        print(
            "edgefleet agent bench: --threads must be 1-64 and --runs 10-10000000", file=sys.stderr
        )
        return EXIT_USAGE
    if not args.model.exists():
        print(f"edgefleet agent bench: {args.model} does not exist", file=sys.stderr)
        return EXIT_USAGE
    from agent.bench import run_bench
    from agent.errors import AgentError

    try:
        result = run_bench(args.model, threads=args.threads, runs=args.runs)
    except AgentError as err:
        print(f"edgefleet agent bench: {err}", file=sys.stderr)
        return EXIT_RUNTIME
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    print(f"{result['backend']} {result['model']} threads={result['threads']} runs={args.runs}")
    for side in ("agent_ms", "bare_ms"):
        p = result[side]
        print(
            f"  {side[:-3]:5} p50 {p['p50']:.4f} ms  p95 {p['p95']:.4f} ms  p99 {p['p99']:.4f} ms"
        )
    print(
        f"  overhead (agent p50 / bare p50): {result['overhead_ratio']}x  rss {result['rss_mb']} MB"
    )
    return EXIT_OK


MAX_INPUT_BYTES = 256 * 1024 * 1024


def _read_input(path: Path) -> bytes:
    from agent.errors import InputError

    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror}") from err
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"larger than {MAX_INPUT_BYTES} bytes")
    return data
