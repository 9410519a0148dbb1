"""One-line summaries of pydantic errors, for the parts that keep pydantic for their own configs.

Not part of the contract (which is msgspec): importing this module does not import pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


def describe_validation_error(err: ValidationError, *, limit: int = 3) -> str:
    """Summarise a pydantic error in one line: ``field.path: message; ...``."""
    parts = []
    for item in err.errors()[:limit]:
        loc = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{loc}: {item['msg']}")
    more = err.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
