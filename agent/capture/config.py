"""The device's ``[capture]`` table: local limits that may only tighten the server's policy."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, field

from agent.config_types import ConfigStruct
from edgefleet.contract import CapturePolicy

Share = Annotated[float, Meta(ge=0, le=1)]


class CaptureConfig(ConfigStruct, frozen=True, kw_only=True):
    """Capture of hard examples and input statistics on this device.

    The capture policy comes from the server with the desired state; the threshold and budget
    fields here are this device's own limits, combined with it by
    :meth:`edgefleet.contract.CapturePolicy.tightened` (a field left unset keeps the server's
    value): a device can capture less than the server asks, never more."""

    enabled: Annotated[
        bool, Meta(description="False: capture nothing, whatever the server's policy says.")
    ] = True
    queue_mb: Annotated[
        float,
        Meta(
            gt=0,
            le=1_000_000,
            description="Disk budget of the capture queue in MiB (default: half the profile's "
            "offline_queue_mb); over it the oldest samples are dropped first, counted.",
        ),
    ] = 32.0
    upload_rate_per_s: Annotated[
        float, Meta(gt=0, le=100, description="Most sample uploads started per second.")
    ] = 1.0
    upload_timeout_s: Annotated[
        float, Meta(gt=0, le=600, description="Seconds one upload may take before it is retried.")
    ] = 30.0
    overhead_share: Annotated[
        float,
        Meta(
            gt=0,
            le=1,
            description="Share of the inference time that input statistics and capture "
            "decisions may take; the agent considers one input in N to stay under it.",
        ),
    ] = 0.02
    low_confidence: Annotated[Share, Meta(description="Tightens low_confidence.")] | None = None
    margin: Annotated[Share, Meta(description="Tightens margin.")] | None = None
    outside_reference: Annotated[Share, Meta(description="Tightens outside_reference.")] | None = (
        None
    )
    classes: (
        Annotated[list[str], Meta(max_length=1000, description="Tightens classes (intersection).")]
        | None
    ) = None
    random: Annotated[Share, Meta(description="Tightens random.")] | None = None
    max_per_hour: Annotated[int, Meta(ge=0, description="Tightens max_per_hour.")] | None = None
    max_per_day: Annotated[int, Meta(ge=0, description="Tightens max_per_day.")] | None = None
    max_mb_per_day: (
        Annotated[float, Meta(ge=0, description="Tightens max_bytes_per_day, in MB.")] | None
    ) = None
    max_side: Annotated[int, Meta(ge=16, le=8192, description="Tightens max_side.")] | None = None
    jpeg_quality: (
        Annotated[int, Meta(ge=1, le=100, description="Tightens jpeg_quality.")] | None
    ) = None
    upload_path: Annotated[
        str, Meta(pattern=r"^/[A-Za-z0-9/_.-]*\Z", description="Upload endpoint on server_url.")
    ] = field(default="/api/v1/samples")

    @property
    def max_bytes(self) -> int:
        return int(self.queue_mb * 1024 * 1024)

    def effective(self, server: CapturePolicy | None) -> CapturePolicy | None:
        """The policy this device applies: the server's, tightened by this table (None: none)."""
        if server is None or not self.enabled:
            return None
        mine = {
            name: getattr(self, name)
            for name in (
                "low_confidence",
                "margin",
                "outside_reference",
                "classes",
                "random",
                "max_per_hour",
                "max_per_day",
                "max_side",
                "jpeg_quality",
            )
            if getattr(self, name) is not None
        }
        if self.max_mb_per_day is not None:
            mine["max_bytes_per_day"] = int(self.max_mb_per_day * 1_000_000)
        return server.tightened(server.model_copy(update=mine))
