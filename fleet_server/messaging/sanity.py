"""What ingest believes of a device's own clock and counter: the checks the writer runs on each
decoded message before it is stored, and the ordering rules for state and liveness.

A device's clock and sequence number are its word, not the server's: a retained ``status``
"online" dated 9999-12-31 kept a device online forever (ordering was by the device's ``ts``),
an "offline" dated 2099 kept it offline, and a ``state`` with seq 2^63-1 made every later state
look stale (issue #11, finding 5). So:

* a timestamp further ahead of the server's clock than :attr:`DeviceClock.future_s` is refused
  (``ts_future``), and on telemetry and events (the stored time series) one older than
  :attr:`DeviceClock.past_s` too (``ts_past``). Not on ``status`` and ``state``: a status's
  Last Will carries the time the agent connected (weeks ago on a long connection), and both are
  retained, so a server restart gets them again with their old time; neither is ordered by it;
* liveness follows the order in which the *server* received the statuses, never their ``ts``;
* a seq far below the last one applied (more than :attr:`DeviceClock.seq_reset_window`) is a
  counter that restarted (a reinstalled agent, or one that once sent a huge number): it is
  applied and counted as a reset, instead of being ignored for ever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from edgefleet.contract import Event, State, Status, Telemetry

log = logging.getLogger(__name__)

DAY_S = 86_400.0


@dataclass(frozen=True)
class DeviceClock:
    """How far ingest trusts device timestamps and sequence numbers (settings:
    ``device_ts_future_s``, ``device_ts_past_s``, ``device_seq_reset_window``)."""

    future_s: float = DAY_S
    past_s: float = 7 * DAY_S
    seq_reset_window: int = 1_000_000


def clock_problem(
    payload: Telemetry | State | Event | Status, received_at: datetime, clock: DeviceClock
) -> str | None:
    """The reject reason for ``payload``'s timestamp (``ts_future``/``ts_past``), or None."""
    if payload.ts > received_at + timedelta(seconds=clock.future_s):
        return "ts_future"
    if isinstance(payload, Status | State):
        return None  # see the module docstring: old times are legitimate here
    if payload.ts < received_at - timedelta(seconds=clock.past_s):
        return "ts_past"
    return None


class SeqOrder(Enum):
    NEWER = "newer"
    STALE = "stale"
    RESET = "reset"


def seq_order(last: int | None, seq: int, *, window: int) -> SeqOrder:
    """Where ``seq`` stands against the last applied ``last``: newer, stale (a redelivery or an
    out-of-order copy: ignored), or a reset (more than ``window`` below: the counter restarted)."""
    if last is None or seq > last:
        return SeqOrder.NEWER
    if last - seq > window:
        return SeqOrder.RESET
    return SeqOrder.STALE


def status_is_newer(last_received: datetime | None, received_at: datetime) -> bool:
    """Liveness by the server's clock: a status applies unless one received later already did."""
    return last_received is None or received_at >= last_received


def log_reset(device_id: str, what: str, last: int, seq: int) -> None:
    log.warning(
        "device sequence number restarted; applied",
        extra={"device_id": device_id, "channel": what, "last_seq": last, "seq": seq},
    )
