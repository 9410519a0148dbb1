"""The ``pipeline`` retraining backend's typed configuration (one :class:`ModelPipeline` per
model name, in ``EDGEFLEET_RETRAIN`` as ``{"type": "pipeline", "models": {...}}``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RolloutTemplate(Strict):
    """How a candidate goes out: the same selector, strategy and gates as ``POST /rollouts``.

    Kept as JSON objects and checked against the rollout spec when the settings load (the
    settings are imported by the rollout package, so its spec cannot be imported here first).
    """

    selector: dict[str, Any] = Field(description="The devices the candidate is rolled out to.")
    strategy: dict[str, Any] = Field(default_factory=dict, description="Canary and batches.")
    gates: dict[str, Any] = Field(default_factory=dict, description="Gate thresholds.")
    shadow: dict[str, Any] | None = Field(
        default=None,
        description="Shadow stage before the canary (the rollout strategy's ``shadow``: "
        "shadow_s, sample_rate, cpu_budget, min_agreement, max_latency_ratio, max_error_rate, "
        "min_samples); null: the canary starts at once.",
    )

    def strategy_body(self) -> dict[str, Any]:
        """The rollout strategy, with the template's shadow stage in it."""
        if self.shadow is None:
            return dict(self.strategy)
        return {**self.strategy, "shadow": self.shadow}

    @model_validator(mode="after")
    def _valid_rollout(self) -> RolloutTemplate:
        from fleet_server.services.rollouts.spec import GatePolicy, Selector, Strategy

        if self.shadow is not None and self.strategy.get("shadow") is not None:
            raise ValueError("give the shadow stage once: in `shadow` or in strategy.shadow")
        Selector.model_validate(self.selector)
        Strategy.model_validate(self.strategy_body())
        GatePolicy.model_validate(self.gates)
        return self


class CompareGate(Strict):
    """The candidate against its parent on the snapshot's held-out split, before any rollout
    (the server's own check; ``--require-compare`` on the rollout takes over once it exists)."""

    enabled: bool = Field(default=True, description="Compare the candidate with its parent.")
    block: bool = Field(
        default=True,
        description="Stop a candidate that is not better. False: the comparison is recorded "
        "on the run and the candidate goes on to its rollout, whose gates (the shadow stage "
        "first) judge it on the fleet's own inputs.",
    )
    min_gain: float = Field(
        default=0.0, ge=-1, le=1, description="Candidate top-1 minus parent top-1 must be ≥ this."
    )
    min_samples: int = Field(
        default=20, ge=1, le=1_000_000, description="Held-out samples needed to judge."
    )


class ModelPipeline(Strict):
    """One model's retraining pipeline: snapshot → train → convert → push → rollout → watch."""

    train_argv: list[str] = Field(
        min_length=1,
        max_length=64,
        description="The training command (no shell). Placeholders {snapshot}, {parent}, "
        "{output}, {model} are replaced; the same values are in EDGEFLEET_SNAPSHOT_DIR, "
        "EDGEFLEET_PARENT_ARTIFACT, EDGEFLEET_OUTPUT, EDGEFLEET_MODEL.",
    )
    output_name: str = Field(
        default="model.onnx",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="File name the training command writes ({output}); its suffix tells "
        "`edgefleet convert` the framework (.onnx, .pkl, .keras, .pt, ...).",
    )
    train_timeout_s: float = Field(
        default=600.0, gt=0, le=24 * 3600, description="The training command is killed then."
    )
    base_dataset: Path | None = Field(
        default=None,
        description="A base data set (.npz: x = model-input rows, y = class indices) copied "
        "into the snapshot as base.npz beside the fleet's labelled samples.",
    )
    holdout_fraction: float = Field(
        default=0.25, gt=0, lt=1, description="Labelled samples kept out of training for eval."
    )
    min_samples: int = Field(
        default=20, ge=1, le=1_000_000, description="Labelled samples needed to start training."
    )
    label_wait_s: float = Field(
        default=86_400.0,
        ge=0,
        le=30 * 86_400,
        description="A trigger usually comes before the labels (drift is seen first, people "
        "label after): the snapshot step waits this long for min_samples labelled samples, "
        "then fails the run.",
    )
    convert_args: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Extra `edgefleet convert` arguments (e.g. --target pi4).",
    )
    max_drop: float = Field(
        default=0.01, ge=0, le=1, description="Accuracy budget of the conversion (--max-drop)."
    )
    convert_timeout_s: float = Field(default=900.0, gt=0, le=24 * 3600, description="Kill then.")
    sign_key: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) the candidate's manifest is signed with.",
    )
    compare: CompareGate = Field(default_factory=CompareGate, description="Before the rollout.")
    rollout: RolloutTemplate = Field(description="The rollout of an accepted candidate.")
    watch_timeout_s: float = Field(
        default=6 * 3600.0, gt=0, le=30 * 86_400, description="The rollout must end by then."
    )

    @field_validator("train_argv")
    @classmethod
    def _argv(cls, value: list[str]) -> list[str]:
        if any(not arg or len(arg) > 4096 or "\x00" in arg for arg in value):
            raise ValueError("arguments are 1-4096 characters without NUL")
        return value


class PipelineRetrainConfig(Strict):
    type: Literal["pipeline"] = Field(description="Run the retraining pipeline on the driver.")
    models: dict[str, ModelPipeline] = Field(
        min_length=1, max_length=1000, description="Model name → its pipeline."
    )
    work_dir: Path | None = Field(
        default=None, description="Scratch space of runs; default <data_dir>/pipelines."
    )
    log_bytes: int = Field(
        default=64 * 1024, ge=1024, le=64 * 1024, description="Output kept per step (the tail)."
    )
    interval_s: float = Field(
        default=2.0, gt=0, le=3600, description="How often the driver advances runs."
    )
