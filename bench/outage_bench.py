"""Broker outage recovery: real agents buffer through a broker restart; what reaches the database?

The scenario of ``tests/e2e/test_outage.py`` (``tests/utils/outage.py``): a real fleet server
(in-process, SQLite or PostgreSQL), N real agent processes sending telemetry every 0.2 s, the
broker stopped until every agent has buffered ``--min-buffered`` messages, then started again on
the same port. Configurations run side by side, the figures are medians over ``--runs``:

    buffered   telemetry/events in the agents' outboxes when the broker came back
    drained    of those, stored in the database afterwards
    lost       telemetry/event seqs an agent queued that never reached the database (gaps)
    dups       telemetry/events the server's MQTT client received twice (stored once)
    skipped    seq numbers never used (the rest of a reserved block after an agent SIGKILL)
    drain_s    broker back → every seq queued so far stored (reconnect back-off included)

The last two rows are the failure modes the deployment notes warn about: a broker without
persistence, and a server without a kept session (``mqtt_session_expiry_s=0``, the old
behaviour). An agent restarted during the outage reconnects on a fresh back-off, usually before
the server does, and drains into a broker with nobody subscribed.

    python bench/outage_bench.py [--agents 3] [--min-buffered 20] [--runs 1]
                                 [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: name → OutageOptions fields (database added per run).
CONFIGS: dict[str, dict[str, Any]] = {
    "mosquitto persistence": {},
    "mosquitto persistence, agent SIGKILL": {"kill_one": True},
    "mosquitto crash (autosave 1 s), agent SIGKILL": {
        "kill_one": True,
        "broker_crash": True,
        "broker_conf": "autosave_interval 1\n",
    },
    "mosquitto crash (save every change), agent SIGKILL": {
        "kill_one": True,
        "broker_crash": True,
        "broker_conf": "autosave_on_changes true\nautosave_interval 1\n",
    },
    "embedded (in-process restart)": {"broker": "embedded"},
    "embedded, agent SIGKILL": {"broker": "embedded", "kill_one": True},
    "NO broker persistence, agent SIGKILL": {"kill_one": True, "broker_persistence": False},
    "NO server session, agent SIGKILL": {
        "kill_one": True,
        "server_settings": {"mqtt_session_expiry_s": 0},
    },
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--min-buffered", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--postgres", default=None, help="also run the first row on PostgreSQL")
    parser.add_argument(
        "--only", action="append", default=None, help="run only configs containing this text"
    )
    args = parser.parse_args()
    if not 1 <= args.agents <= 20 or not 1 <= args.min_buffered <= 10_000 or args.runs < 1:
        parser.error("--agents 1-20, --min-buffered 1-10000, --runs >= 1")

    from tests.utils.outage import OutageResult, run_outage

    configs = [(name, dict(opts), None) for name, opts in CONFIGS.items()]
    if args.postgres:
        configs.insert(1, ("mosquitto persistence, PostgreSQL", {}, args.postgres))
    if args.only:
        configs = [c for c in configs if any(text in c[0] for text in args.only)]
    header = f"{'configuration':48} {'buffered':>8} {'drained':>8} {'lost':>5} {'dups':>5} "
    header += f"{'skipped':>7} {'drain_s':>8}"
    rows = []
    for name, options, postgres in configs:
        results: list[OutageResult] = []
        for _ in range(args.runs):
            work = Path(tempfile.mkdtemp(prefix="edgefleet-outage-bench-"))
            if postgres:
                from contextlib import ExitStack

                with ExitStack() as stack:
                    url = stack.enter_context(_postgres(postgres))
                    results.append(run_outage(_options(args, options, url), work))
            else:
                results.append(run_outage(_options(args, options, None), work))
            print(f"  {name}: {results[-1].line()}", flush=True)
        rows.append(f"{name:48} " + _medians(results))
    print()
    print(f"{args.agents} agents, telemetry every 0.2 s, >= {args.min_buffered} buffered each")
    print(header)
    print("\n".join(rows))
    return 0


def _options(args: argparse.Namespace, options: dict[str, Any], url: str | None) -> Any:
    from tests.utils.outage import OutageOptions

    return OutageOptions(
        agents=args.agents, min_buffered=args.min_buffered, database_url=url, **options
    )


def _medians(results: list[Any]) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    drains = [r.drain_s for r in results if r.drain_s is not None]
    drain = f"{med(drains):8.2f}" if len(drains) == len(results) else f"{'never':>8}"
    return (
        f"{med([r.buffered for r in results]):8.0f} {med([r.drained for r in results]):8.0f} "
        f"{med([r.lost for r in results]):5.0f} {med([r.redelivered for r in results]):5.0f} "
        f"{med([r.skipped for r in results]):7.0f} {drain}"
    )


def _postgres(base: str) -> Any:
    """A fresh database on ``base``'s server, dropped afterwards."""
    import secrets
    from contextlib import contextmanager
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    @contextmanager
    def fresh() -> Any:
        parts = urlsplit(base)
        admin = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))
        name = f"edgefleet_outage_bench_{secrets.token_hex(4)}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
        finally:
            with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return fresh()


if __name__ == "__main__":
    raise SystemExit(main())
