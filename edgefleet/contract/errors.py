"""The one error type the contract raises."""


class ContractError(ValueError):
    """Data that does not satisfy the EdgeFleet contract (manifest, topic or payload).

    The message is one line that says what was wrong, suitable for an HTTP 4xx body, an ingest
    error counter label or an agent event.
    """
