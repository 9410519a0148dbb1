"""Device-class profiles and service units for the devices EdgeFleet runs on.

``profiles/*.toml`` — one per device class (Raspberry Pi 3B+, 4, 5, Zero 2 W, generic x86_64 and
aarch64): threads, backend preference, input defaults, memory and disk budgets, telemetry
interval. Loaded and validated by :func:`firmware_configs.profile.load_profile`.
``systemd/`` — the agent's unit; ``install-agent.sh`` — installs the agent on a device.
"""
