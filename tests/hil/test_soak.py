"""A short soak (``hil/soak.py``, the code ``bench/soak.py`` runs for an hour): two real
agents and a real server for ~80 s with continuous inference, three updates and two broker
restarts. Asserts what a short run can: no descriptor or thread growth after the warm-up and
an agent RSS slope bounded well below a leak (a 1 MB-per-minute leak is 60 MB/h; the hour-long
bench judges the 1 MB/h target). Needs the mosquitto binary."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from hil.soak import SoakOptions, run_soak
from tests.utils.mosquitto import require_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: MB per hour: under a 1 MB-per-minute leak (60 MB/h), above what an update's model swap moves
#: in a 45-second window (~0.4 MB). The bench judges the < 1 MB/h target.
SHORT_RUN_RSS_BOUND = 50.0


def test_short_soak_has_no_fd_or_thread_growth_and_a_bounded_rss_slope(tmp_path: Path) -> None:
    require_mosquitto()
    options = SoakOptions(
        duration_s=80, agents=2, warmup_s=35, sample_s=1.0, update_s=20,
        broker_restart_s=30, broker_down_s=2, telemetry_s=1.0,
    )  # fmt: skip
    # The warm-up ends after the first update (20 s) and the first broker restart (30 s): each
    # is a one-off step the first time (the new model's session beside the old one; the
    # outbox's page cache, before it was capped: +1.9 MB at 33 s). After it the window holds
    # two more updates and a restart, where a per-event leak would show.
    result = run_soak(options, tmp_path)
    trend = result.trend
    assert result.agents_alive and result.updates >= 2 and result.broker_restarts >= 2
    assert trend["samples"] >= 30, trend
    for who in ("agent", "server"):
        after = [r for r in result.rows if r["t"] >= options.warmup_s and r[f"{who}_fds"]]
        third = len(after) // 3
        # Descriptors and threads in the last third after the warm-up are typically (median)
        # where they were in the first third: a download's socket or a pool thread is a
        # transient peak, a leak (one per message, per update, per reconnect) is growth.
        for key in (f"{who}_fds", f"{who}_threads"):
            early = statistics.median(r[key] for r in after[:third])
            late = statistics.median(r[key] for r in after[-third:])
            assert late <= early + 1, (key, [r[key] for r in after])
    # The agents' RSS: bounded. The server's is not asserted here: it still grows while it
    # warms up (ingest batches, caches: +8 MB in the first minute on this machine), which a
    # 80-second run cannot tell from a leak; bench/soak.py measures it after a 5-minute warm-up.
    rss = trend["agent_rss_mb"]
    assert rss["slope_per_h"] < SHORT_RUN_RSS_BOUND, rss
    assert trend["outbox"]["last"] < 50  # drained after the broker restarts
