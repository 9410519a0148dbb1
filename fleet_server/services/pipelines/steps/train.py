"""``train``: the user's training command, on the snapshot, from the parent artifact.

The command gets (as placeholders in its argv and as variables) the snapshot directory, the
parent version's unpacked artifact directory, and the path to write the trained model to. Its
stdout and stderr go to ``train.log`` in the run directory; the step keeps the tail. A non-zero
exit, a timeout, or no output file fails the run.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from sqlmodel import Session

from edgefleet.artifact import ArtifactError, unpack_bundle
from fleet_server.models import ModelVersion
from fleet_server.services.pipelines.steps.base import (
    StepContext,
    StepError,
    StepResult,
    last_line,
    run_command,
)
from fleet_server.storage import StoreError


def export_parent(ctx: StepContext) -> Path:
    """The parent version's bundle from the store, unpacked (verified) under the run dir."""
    assert ctx.run.parent_version is not None
    with Session(ctx.engine) as session:
        row = session.get(ModelVersion, (ctx.run.model, ctx.run.parent_version))
        if row is None:
            raise StepError(f"parent {ctx.run.model}@{ctx.run.parent_version} is gone")
        key, size = row.storage_key, row.size
    target = ctx.run_dir / "parent"
    bundle = ctx.run_dir / "parent.tar.gz"
    try:
        with bundle.open("wb") as f:
            for chunk in ctx.store.read(key, 0, size):
                f.write(chunk)
        if target.exists():
            shutil.rmtree(target)
        unpack_bundle(bundle, target)
    except (StoreError, ArtifactError, OSError) as err:
        raise StepError(f"cannot export the parent artifact: {err}"[:500]) from err
    finally:
        bundle.unlink(missing_ok=True)
    return target


class TrainStep:
    name = "train"

    def run(self, ctx: StepContext) -> StepResult:
        snapshot = Path(ctx.run.context["snapshot_dir"])
        parent = export_parent(ctx)
        output = ctx.run_dir / "train" / ctx.config.output_name
        output.unlink(missing_ok=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        values = {
            "snapshot": str(snapshot),
            "parent": str(parent),
            "output": str(output),
            "model": ctx.run.model,
        }
        argv = [_fill(arg, values) for arg in ctx.config.train_argv]
        env = {
            **os.environ,
            "EDGEFLEET_SNAPSHOT_DIR": values["snapshot"],
            "EDGEFLEET_PARENT_ARTIFACT": values["parent"],
            "EDGEFLEET_OUTPUT": values["output"],
            "EDGEFLEET_MODEL": ctx.run.model,
            "EDGEFLEET_PIPELINE_RUN": str(ctx.run.id),
        }
        started = time.monotonic()
        code, log = run_command(
            argv,
            timeout_s=ctx.config.train_timeout_s,
            env=env,
            log_path=ctx.run_dir / "train.log",
            what=f"training command {argv[0]}",
        )
        seconds = round(time.monotonic() - started, 3)
        numbers = {"exit_code": code, "seconds": seconds}
        if code != 0:
            raise StepError(
                f"training command exited {code}: {last_line(log)}", log=log, numbers=numbers
            )
        if not output.is_file() and not output.is_dir():
            raise StepError(f"training command exited 0 but wrote no {output.name}", log=log)
        return StepResult(
            detail=f"trained in {seconds:.1f} s",
            numbers=numbers,
            log=log,
            context={"trained_model": str(output), "parent_dir": str(parent)},
        )


def _fill(arg: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        arg = arg.replace("{" + key + "}", value)
    return arg
