"""Drift detection on the fleet's telemetry and the retraining triggers it fires."""

from fleet_server.services.drift.detectors import DETECTORS, Aggregate, DriftConfig
from fleet_server.services.drift.job import DriftJob, drift_report
from fleet_server.services.drift.retrain import BACKENDS, RetrainConfig, backend_for

__all__ = [
    "BACKENDS",
    "DETECTORS",
    "Aggregate",
    "DriftConfig",
    "DriftJob",
    "RetrainConfig",
    "backend_for",
    "drift_report",
]
