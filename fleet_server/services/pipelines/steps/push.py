"""``push``: the converted artifact into the model registry, with its lineage (parent version,
``dataset_sha256``, training ref ``pipeline-run:<id>``), through the same checks as an upload."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlmodel import Session

from edgefleet.artifact import hash_file, pack_bundle
from fleet_server.models import ModelVersion
from fleet_server.services.errors import ServiceError
from fleet_server.services.models import Lineage, register_bundle
from fleet_server.services.pipelines.steps.base import StepContext, StepError, StepResult


def training_ref(run_id: int) -> str:
    return f"pipeline-run:{run_id}"


class PushStep:
    name = "push"

    def run(self, ctx: StepContext) -> StepResult:
        version = ctx.run.candidate_version
        assert version is not None
        with Session(ctx.engine) as session:
            existing = session.get(ModelVersion, (ctx.run.model, version))
            if existing is not None:
                if existing.training_ref != training_ref(ctx.run.id):
                    raise StepError(f"{ctx.run.model}@{version} exists and is not this run's")
                # An earlier attempt pushed it and the server stopped before recording that.
                return StepResult(
                    detail=f"{ctx.run.model}@{version} already pushed",
                    numbers={"sha256": existing.sha256, "size": existing.size},
                )
        bundle = pack_bundle(Path(ctx.run.context["artifact_dir"]), ctx.run_dir / "bundle.tar.gz")
        sha256, size = hash_file(bundle)
        scratch = ctx.run_dir / "push"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            with Session(ctx.engine) as session:
                row = register_bundle(
                    session=session,
                    store=ctx.store,
                    bundle=bundle,
                    sha256=sha256,
                    size=size,
                    work_dir=scratch,
                    trusted_keys=ctx.trusted_keys,
                    require_signed=ctx.require_signed,
                    lineage=Lineage(
                        parent_version=ctx.run.parent_version,
                        dataset_sha256=ctx.run.dataset_sha256,
                        training_ref=training_ref(ctx.run.id),
                    ),
                )
                signed = row.signed
        except ServiceError as err:
            raise StepError(f"push refused: {err}") from err
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return StepResult(
            detail=f"pushed {ctx.run.model}@{version} (parent {ctx.run.parent_version}, "
            f"{'signed' if signed else 'unsigned'})",
            numbers={"sha256": sha256, "size": size, "signed": signed},
        )
