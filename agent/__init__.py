"""The on-device agent: serve a verified model, report telemetry, apply desired-state updates.

Runs on a Raspberry Pi-class device with numpy, onnxruntime (or LiteRT), OpenCV and paho-mqtt.
Imports nothing from ``fleet_server`` or ``converters``; heavy modules load lazily.
"""
