"""Named leases (``driver``: the replica that runs rollouts and other periodic jobs).

One row per lease; ``epoch`` grows by one every time another holder takes the lease over, so a
job can fence its writes with the epoch it was started under."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from fleet_server.models.types import UTCDateTime


class LeaseRow(SQLModel, table=True):
    __tablename__ = "lease"

    name: str = Field(primary_key=True, max_length=64, description="Lease name, e.g. 'driver'.")
    holder: str = Field(max_length=128, description="Replica id of the current or last holder.")
    epoch: int = Field(sa_type=sa.BigInteger, description="Fencing token; +1 on every takeover.")
    expires_at: datetime = Field(sa_type=UTCDateTime, description="Held until then (UTC).")
