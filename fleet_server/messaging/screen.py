"""What the contract accepts but the database would refuse, refused before the write.

The writer isolates a row the database refuses by bisecting its batch (:mod:`.ingest`), but
that costs ~2·log2(batch) extra transactions per refused message: on PostgreSQL one such
message per 500 cut ingest from 8.9k to 3.1k msg/s, one per 50 to 0.4k. A device could send one
in every batch and slow everybody down, so the refusals known in advance are checked here, per
message, for almost nothing (one per 50 refused here: ~6k msg/s, as without any); bisection is
left for the ones nobody foresaw.
"""

from __future__ import annotations

from edgefleet.contract import Event, Payload, State, Telemetry

#: BIGINT, the type of every counter column (the contract's counters have no upper bound).
_MAX_BIGINT = 2**63 - 1


def refusal(payload: Payload) -> str | None:
    """The reject reason (``out_of_range``, ``nul_in_text``) if the database would refuse
    ``payload``, else None."""
    if isinstance(payload, Telemetry):
        counters = (payload.inference_count, payload.error_count, payload.dropped)
        if max(counters) > _MAX_BIGINT:
            return "out_of_range"
    elif isinstance(payload, Event):
        if "\x00" in payload.detail:
            return "nul_in_text"
    elif isinstance(payload, State):
        texts = (payload.agent_version, payload.device_class, payload.last_error)
        if any(text is not None and "\x00" in text for text in texts):
            return "nul_in_text"  # PostgreSQL text columns cannot hold NUL (SQLite can)
    return None
