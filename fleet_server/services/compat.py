"""Which artifact formats a device can run, decided in one place for assignments and rollouts.

A device class that names a built-in device profile (``firmware_configs/profiles``) runs the
formats of that profile's ``engine.backends``: ``rpi-armv7`` (32-bit Raspberry Pi OS, no
onnxruntime wheels) runs only ``tflite``. A class with no built-in profile, or no class at all,
is not restricted: the server cannot know, and the agent refuses at load what it cannot run.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Protocol


class HasClass(Protocol):
    device_id: str
    device_class: str | None


@cache
def formats_for(device_class: str | None) -> frozenset[str] | None:
    """The formats the class's built-in profile runs; None when there is no such profile.

    Only built-in names are looked up (a device-reported class is never read as a path)."""
    from firmware_configs.profile import ProfileError, builtin_profiles, load_profile

    if device_class is None or device_class not in builtin_profiles():
        return None
    try:
        return frozenset(load_profile(device_class).engine.backends)
    except ProfileError:
        return None


def can_run(*, device_class: str | None, fmt: str) -> bool:
    formats = formats_for(device_class)
    return formats is None or fmt in formats


def cannot_run(devices: Iterable[HasClass], *, fmt: str) -> list[str]:
    """Ids of the devices whose class cannot run ``fmt`` artifacts, sorted."""
    return sorted(d.device_id for d in devices if not can_run(device_class=d.device_class, fmt=fmt))
