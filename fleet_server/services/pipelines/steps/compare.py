"""``compare``: the candidate against its parent on the same held-out split, before anything
reaches a device. A candidate that is not at least ``min_gain`` better stops the run here and
the fleet stays on the parent — unless ``block`` is off: then the figures are recorded (with
``passed`` false) and the rollout's gates judge the candidate.

Both models run in this process through onnxruntime (the converter's runtime helpers, imported
lazily); a non-ONNX artifact cannot be compared here and says so (turn ``compare`` off and rely
on the rollout's gates).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleet_server.services.pipelines.steps.base import StepContext, StepError, StepResult


def accuracy(artifact_dir: Path, holdout: Path) -> tuple[float, int]:
    """Top-1 of the artifact's model on ``holdout.npz`` (x rows, y class indices)."""
    import numpy as np

    from converters.errors import ConvertError
    from converters.runtime import make_session, run_batched
    from converters.stats import class_index

    manifest: dict[str, Any] = json.loads((artifact_dir / "manifest.json").read_text())
    if manifest.get("format") != "onnx":
        raise StepError(
            f"compare runs ONNX models; {artifact_dir.name} is {manifest.get('format')}"
        )
    with np.load(holdout, allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    if len(y) == 0:
        return 0.0, 0
    spec = manifest["inputs"][0]
    try:
        session = make_session((artifact_dir / manifest["model_file"]).read_bytes())
        batch = spec["shape"][0] if spec["shape"] and isinstance(spec["shape"][0], int) else None
        if batch is not None and batch != len(y):
            rows = [
                run_batched(session, {spec["name"]: x[i : i + 1]}, batch=1) for i in range(len(y))
            ]
            outputs = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        else:
            outputs = run_batched(session, {spec["name"]: x}, batch=None)
    except ConvertError as err:
        raise StepError(f"cannot evaluate {artifact_dir.name}: {err}") from err
    predicted = class_index(outputs)
    if predicted is None:
        raise StepError(f"{artifact_dir.name} has no 2-D score output to compare on")
    return float((predicted == y).mean()), len(y)


class CompareStep:
    name = "compare"

    def run(self, ctx: StepContext) -> StepResult:
        gate = ctx.config.compare
        if not gate.enabled:
            return StepResult(detail="compare is off: the rollout's gates judge the candidate")
        holdout = Path(ctx.run.context["snapshot_dir"]) / "holdout.npz"
        new, samples = accuracy(Path(ctx.run.context["artifact_dir"]), holdout)
        old, _ = accuracy(Path(ctx.run.context["parent_dir"]), holdout)
        numbers = {
            "parent_top1": round(old, 4),
            "candidate_top1": round(new, 4),
            "samples": samples,
            "gain": round(new - old, 4),
        }
        line = (
            f"held-out top-1 parent {old:.4f} → candidate {new:.4f} on {samples} samples "
            f"(gain {new - old:+.4f}, needs ≥ {gate.min_gain:+.4f})"
        )
        short = samples < gate.min_samples
        if not short and new - old >= gate.min_gain:
            return StepResult(detail=line, numbers={**numbers, "passed": True})
        found = (
            f"{samples} held-out samples; the compare needs {gate.min_samples}"
            if short
            else f"candidate stopped: {line}; the fleet stays on the parent"
        )
        if gate.block:
            raise StepError(found, numbers={**numbers, "passed": False})
        found = found if short else f"not better: {line}"
        return StepResult(
            detail=f"{found}; not blocking (compare.block is off): the rollout's gates judge it",
            numbers={**numbers, "passed": False},
        )
