"""The EdgeFleet fleet server: device registry, model registry, assignments and telemetry ingest.

``create_app(settings)`` in :mod:`fleet_server.app` builds the FastAPI application; importing this
package imports nothing heavy, so ``edgefleet server --help`` works without the server extra.
"""
