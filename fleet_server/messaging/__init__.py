"""The server's MQTT side: one transport, batched ingest of device messages, desired state out."""
