"""``edgefleet agent run`` and ``edgefleet agent infer`` (standard library at module level).

Exit codes: 0 ok, 2 bad configuration or arguments (one line on stderr), 1 runtime failure.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

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

    infer = commands.add_parser("infer", help="run an artifact on image or .npy files")
    infer.add_argument("artifact", type=Path, metavar="ARTIFACT_DIR", help="artifact directory")
    infer.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="image or .npy")
    infer.add_argument("--top-k", type=int, default=3, help="classes per result (default 3)")
    infer.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    infer.set_defaults(handler=infer_command)


def _fail(err: Exception, code: int) -> int:
    """Print an error (one line per bad config field), each prefixed with the command."""
    for line in str(err).splitlines() or [type(err).__name__]:
        print(f"edgefleet agent: {line}", file=sys.stderr)
    return code


def run_command(args: argparse.Namespace) -> int:
    from agent.config import load_config
    from agent.errors import AgentConfigError, AgentError
    from edgefleet.logs import configure_logging

    try:
        config = load_config(args.config)
    except AgentConfigError as err:
        return _fail(err, EXIT_USAGE)
    configure_logging(config.log_level)
    from agent.service import AgentService

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


def infer_command(args: argparse.Namespace) -> int:
    if args.top_k < 1 or not 1 <= args.threads <= 64:
        print("edgefleet agent infer: --top-k must be >= 1 and --threads 1-64", file=sys.stderr)
        return EXIT_USAGE
    if not args.artifact.is_dir():
        print(f"edgefleet agent infer: {args.artifact} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    from agent.engine import BackendOptions, load_model
    from agent.errors import AgentError, ModelLoadError
    from agent.state import Serving

    try:
        model = load_model(args.artifact, options=BackendOptions(threads=args.threads))
        serving = Serving.of(model)
    except ModelLoadError as err:
        print(f"edgefleet agent infer: {err}", file=sys.stderr)
        return EXIT_RUNTIME
    failures = 0
    for path in args.inputs:
        result: dict[str, Any] = {"file": str(path)}
        try:
            data = _read_input(path)
            outputs = model.infer({serving.preprocess.tensor.name: serving.preprocess(data)})
            result.update(describe(model, outputs, top_k=args.top_k))
        except (AgentError, OSError) as err:
            failures += 1
            result["error"] = str(err)
        print(json.dumps(result), flush=True)
    return EXIT_RUNTIME if failures else EXIT_OK


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


def describe(model: Any, outputs: dict[str, Any], *, top_k: int) -> dict[str, Any]:
    """Top-k labels and scores for a classifier; every output as nested lists otherwise."""
    import numpy as np

    if model.scores_output is not None:
        scores = np.asarray(outputs[model.scores_output]).reshape(-1)
        labels = model.manifest.labels
        order = np.argsort(-scores)[:top_k]
        return {
            "model": str(model.ref),
            "top_k": [
                {
                    "index": int(i),
                    "label": labels[i] if i < len(labels) else str(int(i)),
                    "score": round(float(scores[i]), 6),
                }
                for i in order
            ],
        }
    return {
        "model": str(model.ref),
        "outputs": {name: np.asarray(value).tolist() for name, value in outputs.items()},
    }
