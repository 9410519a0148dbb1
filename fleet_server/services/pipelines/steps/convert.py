"""``convert``: ``edgefleet convert`` of the trained model (a subprocess: the server never imports
the converter's heavy stack into its own process for this), calibrated on the snapshot's
training split, evaluated on its held-out split, within the configured accuracy budget.

The candidate's version is ``<parent>+r<run id>``: unique per run and readable as "retrained
from the parent".
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from edgefleet.artifact import ArtifactError, read_manifest
from fleet_server.services.pipelines.steps.base import (
    StepContext,
    StepError,
    StepResult,
    last_line,
    run_command,
)


def candidate_version(parent: str, run_id: int) -> str:
    suffix = f"+r{run_id}"
    return parent.split("+r", 1)[0][: 63 - len(suffix)] + suffix


class ConvertStep:
    name = "convert"

    def run(self, ctx: StepContext) -> StepResult:
        assert ctx.run.parent_version is not None
        snapshot = Path(ctx.run.context["snapshot_dir"])
        trained = Path(ctx.run.context["trained_model"])
        version = candidate_version(ctx.run.parent_version, ctx.run.id)
        artifact = ctx.run_dir / "artifact"
        parent = json.loads((Path(ctx.run.context["parent_dir"]) / "manifest.json").read_text())
        argv = [
            sys.executable,
            "-m",
            "edgefleet",
            "convert",
            str(trained),
            "-o",
            str(artifact),
            "--force",
            "--quiet",
            "--name",
            ctx.run.model,
            "--version",
            version,
            "--task",
            str(parent.get("task", "classification")),
            "--preprocessing",
            str(snapshot / "preprocessing.json"),
            "--labels",
            str(snapshot / "labels.txt"),
            "--eval",
            str(snapshot / "holdout.npz"),
            "--max-drop",
            str(ctx.config.max_drop),
        ]
        if _rows(snapshot / "train.npz") > 0:
            argv += ["--calibration", str(snapshot / "train.npz")]
        if ctx.config.sign_key is not None:
            argv += ["--sign-key", str(ctx.config.sign_key)]
        argv += ctx.config.convert_args
        code, log = run_command(
            argv,
            timeout_s=ctx.config.convert_timeout_s,
            env=dict(os.environ),
            log_path=ctx.run_dir / "convert.log",
            what="edgefleet convert",
        )
        if code != 0:
            raise StepError(f"edgefleet convert exited {code}: {last_line(log)}", log=log)
        try:
            manifest = read_manifest(artifact)
        except ArtifactError as err:
            raise StepError(f"the converted artifact is unreadable: {err}", log=log) from err
        numbers = {
            "version": version,
            "format": manifest.format,
            "precision": manifest.precision,
            "top1": manifest.metrics.top1,
            "eval_samples": manifest.metrics.eval_samples,
        }
        top1 = "" if manifest.metrics.top1 is None else f", top-1 {manifest.metrics.top1:.4f}"
        return StepResult(
            detail=f"{version}: {manifest.format} {manifest.precision}{top1} on held-out",
            numbers=numbers,
            log=log,
            run_fields={"candidate_version": version},
            context={"artifact_dir": str(artifact)},
        )


def _rows(path: Path) -> int:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return int(data["y"].shape[0])
