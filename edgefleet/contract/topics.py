"""MQTT topic layout: ``edgefleet/v1/<device_id>/<channel>``.

One topic level per device id, so a broker ACL can confine a device to
``edgefleet/v1/<device_id>/#`` (read ``desired``, write the rest).

==========  ==============  ===  ========  ====================================================
channel     direction       QoS  retained  payload
==========  ==============  ===  ========  ====================================================
telemetry   device → server  1   no        :class:`~edgefleet.contract.payloads.Telemetry`
state       device → server  1   yes       :class:`~edgefleet.contract.payloads.State`
events      device → server  1   no        :class:`~edgefleet.contract.payloads.Event`
status      device → server  1   yes       :class:`~edgefleet.contract.payloads.Status`;
                                           the Last Will is ``status=offline``
desired     server → device  1   yes       :class:`~edgefleet.contract.payloads.DesiredState`
results     device → server  0   no        :class:`~edgefleet.contract.payloads.Result` (the
                                           ``mqtt`` result sink; QoS 0 or 1 by its config; not
                                           ingested by the server)
==========  ==============  ===  ========  ====================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from edgefleet.contract.errors import ContractError

ROOT = "edgefleet"
API_LEVEL = "v1"
PREFIX = f"{ROOT}/{API_LEVEL}"
_DEVICE_LEVEL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    STATE = "state"
    EVENTS = "events"
    STATUS = "status"
    DESIRED = "desired"
    RESULTS = "results"


@dataclass(frozen=True)
class ChannelSpec:
    qos: int
    retained: bool
    from_device: bool


CHANNELS: dict[Channel, ChannelSpec] = {
    Channel.TELEMETRY: ChannelSpec(qos=1, retained=False, from_device=True),
    Channel.STATE: ChannelSpec(qos=1, retained=True, from_device=True),
    Channel.EVENTS: ChannelSpec(qos=1, retained=False, from_device=True),
    Channel.STATUS: ChannelSpec(qos=1, retained=True, from_device=True),
    Channel.DESIRED: ChannelSpec(qos=1, retained=True, from_device=False),
    # The default QoS; the sink's config may raise it to 1.
    Channel.RESULTS: ChannelSpec(qos=0, retained=False, from_device=True),
}


def topic(device_id: str, channel: Channel) -> str:
    """The topic a device publishes ``channel`` on (or receives ``desired`` on)."""
    if not _DEVICE_LEVEL.fullmatch(device_id):
        raise ContractError(f"invalid device id {device_id[:80]!r} for a topic level")
    return f"{PREFIX}/{device_id}/{channel.value}"


def device_filter(device_id: str) -> str:
    """Everything under one device, e.g. for an ACL: ``edgefleet/v1/<id>/#``."""
    return topic(device_id, Channel.STATE).rsplit("/", 1)[0] + "/#"


def fleet_filter(channel: Channel) -> str:
    """One channel of every device, e.g. ``edgefleet/v1/+/telemetry``."""
    return f"{PREFIX}/+/{channel.value}"


def shared_filter(group: str, channel: Channel) -> str:
    """An MQTT v5 shared subscription so N server replicas split ingest."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", group):
        raise ContractError(f"invalid shared-subscription group {group!r}")
    return f"$share/{group}/{fleet_filter(channel)}"


def parse_topic(value: str) -> tuple[str, Channel]:
    """Split a topic into (device_id, channel); ContractError if it is not ours."""
    parts = value.split("/")
    if len(parts) != 4 or parts[0] != ROOT or parts[1] != API_LEVEL:
        raise ContractError(f"not an EdgeFleet {API_LEVEL} topic: {value[:120]!r}")
    device_id, name = parts[2], parts[3]
    if not _DEVICE_LEVEL.fullmatch(device_id):
        raise ContractError(f"invalid device id in topic: {device_id[:80]!r}")
    try:
        return device_id, Channel(name)
    except ValueError as err:
        raise ContractError(f"unknown channel {name[:40]!r} in topic") from err
