"""The periodic jobs of the driver (the replica holding the ``driver`` lease), chosen from the
settings: rollout steps, retention, the telemetry roll-up, and — when configured — drift
detection, the retraining pipeline and the webhook runs' report watch."""

from __future__ import annotations

from sqlalchemy import Engine

from fleet_server.services.drift import DriftJob, backend_for
from fleet_server.services.drift.retrain import WebhookRetrainConfig
from fleet_server.services.leader import LeaderLoop
from fleet_server.services.pipelines.config import PipelineRetrainConfig
from fleet_server.services.pipelines.driver import PipelineDriver
from fleet_server.services.pipelines.webhook_watch import WebhookRunWatch
from fleet_server.services.retention import RetentionJob
from fleet_server.services.rollouts.engine import RolloutEngine
from fleet_server.services.rollouts.job import RolloutJob
from fleet_server.services.rollup import RollupJob
from fleet_server.settings import ServerSettings
from fleet_server.storage import ArtifactStore


def add_driver_jobs(
    leader: LeaderLoop,
    *,
    settings: ServerSettings,
    engine: Engine,
    store: ArtifactStore,
    rollouts: RolloutEngine,
    trusted_keys: list[bytes],
) -> PipelineDriver | None:
    """Register the jobs with ``leader``; the pipeline driver, if any (the runtime closes it)."""
    leader.add_job(RolloutJob(rollouts, interval_s=settings.rollout_tick_s))
    leader.add_job(
        RetentionJob(
            engine=engine,
            raw_days=settings.telemetry_raw_days,
            hourly_days=settings.telemetry_hourly_days,
            audit_days=settings.audit_retention_days,
            sample_days=settings.sample_retention_days,
            store=store,
            interval_s=settings.retention_interval_s,
            budget_s=settings.lease_ttl_s / 3,
        )
    )
    leader.add_job(
        RollupJob(
            engine=engine,
            interval_s=settings.telemetry_rollup_interval_s,
            keep_days=settings.telemetry_hourly_days,
            budget_s=settings.lease_ttl_s / 3,
        )
    )
    if settings.drift.enabled:
        retrain = settings.retrain
        leader.add_job(
            DriftJob(
                engine=engine,
                config=settings.drift,
                retrain=backend_for(retrain, engine=engine) if retrain else None,
                cooldown_s=settings.retrain_cooldown_s,
            )
        )
    pipelines = None
    if isinstance(settings.retrain, PipelineRetrainConfig):
        pipelines = PipelineDriver(
            engine=engine,
            config=settings.retrain,
            store=store,
            rollouts=rollouts,
            trusted_keys=trusted_keys,
            require_signed=settings.require_signed,
            work_dir=settings.retrain.work_dir or settings.data_dir / "pipelines",
            holds_lease=lambda epoch: leader.epoch == epoch,
            background=True,
        )
        leader.add_job(pipelines)
    if isinstance(settings.retrain, WebhookRetrainConfig):
        hook = settings.retrain
        leader.add_job(
            WebhookRunWatch(
                engine=engine,
                timeout_for=hook.report_timeout_for,
                shortest_s=min([hook.report_timeout_s, *hook.report_timeouts_s.values()]),
            )
        )
    return pipelines
