"""The one error type the contract raises."""


class ContractError(ValueError):
    """Data that does not satisfy the EdgeFleet contract (manifest, topic or payload).

    The message is one line that says what was wrong, suitable for an HTTP 4xx body, an ingest
    error counter label or an agent event.
    """


class NonFiniteNumberError(ContractError):
    """``NaN``, ``Infinity``, ``-Infinity`` or a number that overflows to infinity (``1e999``).

    Not JSON (RFC 8259 has finite numbers only): msgspec refuses them, Python's ``json`` would
    accept them, and PostgreSQL refuses the JSON they become, so they are refused on the way in.
    A subclass so that ingest can count them under their own reason.
    """
