"""``snapshot``: the model's labelled samples (and the base data set) laid out for training.

The run directory gets ``snapshot/``:

* ``train/<class>/<id>.<ext>`` and ``holdout/<class>/<id>.<ext>``: the samples as captured,
  split by their content hash (the same sample always lands on the same side, so a retrain on
  more data never trains on what an earlier run held out);
* ``train.npz`` and ``holdout.npz``: the same samples as model-input rows (``x``, by the parent
  version's preprocessing) and class indices (``y``, by its labels) — calibration and eval for
  ``edgefleet convert``, and what a trainer can read without decoding images;
* ``base.npz`` when a base data set is configured; ``labels.txt``, ``preprocessing.json``,
  ``manifest.json`` (the dataset snapshot whose sha256 is the ``dataset_sha256``).

With a base data set the ``dataset_sha256`` is the sha256 of ``{"base": <file sha256>,
"fleet": <snapshot sha256>}`` (canonical JSON): both inputs of the training are in the lineage.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from sqlmodel import Session

from edgefleet.artifact import hash_file
from edgefleet.contract import parse_manifest
from edgefleet.contract.parsing import canonical_json
from fleet_server.models import ModelVersion
from fleet_server.services.errors import ServiceError
from fleet_server.services.pipelines.steps.base import StepContext, StepError, StepResult
from fleet_server.services.samples import SampleFilter, count_samples
from fleet_server.services.snapshots import build_snapshot
from fleet_server.storage import StoreError, sample_key

#: Largest sample file copied into a snapshot.
MAX_SAMPLE_BYTES = 32 * 1024 * 1024


def holdout(sha256: str, fraction: float) -> bool:
    """A sample's side of the split, from its content hash (stable across runs)."""
    return int(sha256[:8], 16) / 0x1_0000_0000 < fraction


class SnapshotStep:
    name = "snapshot"

    def run(self, ctx: StepContext) -> StepResult:
        if ctx.run.parent_version is None:
            raise StepError(f"no registered version of {ctx.run.model} to retrain from")
        with Session(ctx.engine) as session:
            parent = session.get(ModelVersion, (ctx.run.model, ctx.run.parent_version))
            if parent is None:
                raise StepError(f"parent {ctx.run.model}@{ctx.run.parent_version} is gone")
            flt = SampleFilter(model=ctx.run.model, labelled=True)
            labelled = count_samples(session=session, flt=flt)
            if labelled < ctx.config.min_samples:
                waited = (ctx.now - ctx.run.started_at).total_seconds()
                line = (
                    f"{labelled} labelled samples of {ctx.run.model}; the pipeline needs "
                    f"{ctx.config.min_samples} to train"
                )
                if waited < ctx.config.label_wait_s:
                    return StepResult(
                        detail=f"waiting for labels: {line}",
                        done=False,
                        numbers={"labelled": labelled, "waited_s": round(waited, 1)},
                    )
                raise StepError(f"{line} (waited {waited:.0f} s)")
            manifest = parse_manifest(json.dumps(parent.manifest).encode())
            try:
                snap = build_snapshot(
                    session=session,
                    store=ctx.store,
                    model=ctx.run.model,
                    version=None,
                    fmt="imagefolder",
                )
            except ServiceError as err:
                raise StepError(f"snapshot: {err}") from err
        samples = snap.manifest["counts"]["labelled"]
        if samples < ctx.config.min_samples:
            raise StepError(
                f"{samples} labelled samples of {ctx.run.model}; the pipeline needs "
                f"{ctx.config.min_samples} to train"
            )
        out = ctx.run_dir / "snapshot"
        if out.exists():
            shutil.rmtree(out)  # an earlier attempt's leftovers: rebuilt from the database
        out.mkdir(parents=True)
        if manifest.preprocessing is None:
            raise StepError(f"{ctx.run.model}@{ctx.run.parent_version} has no preprocessing")
        labels = list(manifest.labels)
        (out / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
        (out / "preprocessing.json").write_text(
            json.dumps(json.loads(manifest.to_json())["preprocessing"])
        )
        (out / "manifest.json").write_bytes(canonical_json(snap.manifest))
        sides: dict[str, list[tuple[Path, str]]] = {"train": [], "holdout": []}
        for entry in snap.manifest["files"]:
            side = "holdout" if holdout(entry["sha256"], ctx.config.holdout_fraction) else "train"
            path = out / side / entry["path"]
            _copy(ctx, entry["sha256"], int(entry["size"]), path)
            sides[side].append((path, entry["path"].split("/", 1)[0]))
        counts: dict[str, Any] = {"samples": samples, "classes": len(snap.manifest["classes"])}
        for side, files in sides.items():
            rows, skipped = _npz(files, labels, manifest, out / f"{side}.npz")
            counts[side], counts[f"{side}_unusable"] = rows, skipped
        dataset_sha = snap.sha256
        if ctx.config.base_dataset is not None:
            base = ctx.config.base_dataset
            if not base.is_file():
                raise StepError(f"base data set {base} is not a file")
            shutil.copyfile(base, out / "base.npz")
            base_sha, _ = hash_file(out / "base.npz")
            counts["base_sha256"] = base_sha
            both = canonical_json({"base": base_sha, "fleet": snap.sha256})
            dataset_sha = hashlib.sha256(both).hexdigest()
        return StepResult(
            detail=f"{counts['train']} training and {counts['holdout']} held-out samples "
            f"of {counts['classes']} classes",
            numbers=counts,
            run_fields={"dataset_sha256": dataset_sha},
            context={"snapshot_dir": str(out)},
        )


def _copy(ctx: StepContext, sha256: str, size: int, path: Path) -> None:
    if size > MAX_SAMPLE_BYTES:
        raise StepError(f"sample {sha256[:12]} is {size} bytes (limit {MAX_SAMPLE_BYTES})")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("wb") as f:
            for chunk in ctx.store.read(sample_key(sha256), 0, size):
                f.write(chunk)
    except (StoreError, OSError) as err:
        raise StepError(f"sample {sha256[:12]}: {err}"[:500]) from err


def _npz(
    files: list[tuple[Path, str]], labels: list[str], manifest: Any, out: Path
) -> tuple[int, int]:
    """Rows of model input (the parent's preprocessing) and class indices; (rows, skipped)."""
    import numpy as np

    from converters.errors import ConvertError
    from converters.preprocess import load_image, preprocess

    index = {label: i for i, label in enumerate(labels)}
    pre = manifest.preprocessing
    spec = manifest.inputs[0]
    row_shape = list(spec.shape[1:]) if spec.shape else []
    xs: list[Any] = []
    ys: list[int] = []
    skipped = 0
    for path, label in files:
        if label not in index:
            skipped += 1
            continue
        try:
            if path.suffix == ".npy":
                array = np.load(path, allow_pickle=False)
                if array.dtype == np.uint8 and array.ndim in (2, 3):
                    array = preprocess(array, pre)
                row = np.asarray(array, dtype=np.float32)
                if row_shape and all(isinstance(d, int) and d > 0 for d in row_shape):
                    row = row.reshape(row_shape)
            else:
                row = load_image(path, pre)
        except (ConvertError, ValueError, OSError):
            skipped += 1  # an unreadable or misshapen sample is left out and counted
            continue
        xs.append(row)
        ys.append(index[label])
    x = np.stack(xs) if xs else np.zeros([0, *[int(d) for d in row_shape]], dtype=np.float32)
    np.savez(out, x=x, y=np.asarray(ys, dtype=np.int64))
    return len(ys), skipped
