"""Labels on samples: a class for classifiers, boxes for detectors; who set them and when.

A class must be one of the model version's manifest ``labels`` when the manifest has them
(otherwise any name, e.g. a class index as a string). A batch is all or nothing: one unknown
sample or class refuses the whole batch, naming what is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session, col, select

from fleet_server.models import ModelVersion as ModelVersionRow
from fleet_server.models import Sample
from fleet_server.models.types import utcnow
from fleet_server.services.errors import NotFound, Unprocessable

#: Most labels one bulk request may set.
MAX_BULK = 10_000
_CLASS = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")


class Box(BaseModel):
    """A box in the sample's pixel coordinates (x1, y1 top left; x2, y2 bottom right)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(
        min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$", description="Class."
    )
    x1: float = Field(ge=0, le=100_000, description="Left edge, pixels.")
    y1: float = Field(ge=0, le=100_000, description="Top edge, pixels.")
    x2: float = Field(ge=0, le=100_000, description="Right edge, pixels (> x1).")
    y2: float = Field(ge=0, le=100_000, description="Bottom edge, pixels (> y1).")

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if self.x2 <= self.x1 or self.y2 <= self.y1:
            raise ValueError("a box needs x2 > x1 and y2 > y1")
        return self


class LabelSet(BaseModel):
    """A sample's label: ``label`` (classification) or ``boxes`` (detection, may be empty:
    "nothing to detect here"), exactly one of them."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="Class label (one of the model's manifest labels when it lists them).",
    )
    boxes: list[Box] | None = Field(
        default=None, max_length=1000, description="Boxes, for detectors."
    )

    @model_validator(mode="after")
    def _one(self) -> LabelSet:
        if (self.label is None) == (self.boxes is None):
            raise ValueError("give exactly one of 'label' or 'boxes'")
        return self

    def classes(self) -> set[str]:
        if self.label is not None:
            return {self.label}
        return {b.label for b in self.boxes or []}


class BulkLabel(LabelSet):
    id: int = Field(ge=1, description="Sample id.")


class BulkLabels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[BulkLabel] = Field(
        min_length=1, max_length=MAX_BULK, description="One label per sample id."
    )


def apply_labels(
    *, session: Session, items: Sequence[tuple[int, LabelSet]], actor: str
) -> list[Sample]:
    """Set each sample's label (all or nothing); the labelled rows, in ``items`` order."""
    ids = [sample_id for sample_id, _ in items]
    rows = {r.id: r for r in session.exec(select(Sample).where(col(Sample.id).in_(ids))).all()}
    missing = [i for i in dict.fromkeys(ids) if i not in rows]
    if missing:
        raise NotFound(f"unknown samples: {_names(missing)}")
    known: dict[tuple[str, str], set[str] | None] = {}
    unknown: dict[str, set[str]] = {}
    for sample_id, label in items:
        row = rows[sample_id]
        key = (row.model_name, row.model_version)
        if key not in known:
            known[key] = manifest_labels(session, *key)
        allowed = known[key]
        if allowed is None:
            continue
        bad = label.classes() - allowed
        if bad:
            unknown.setdefault(f"{key[0]}@{key[1]}", set()).update(bad)
    if unknown:
        detail = "; ".join(f"{m}: {_names(sorted(c))}" for m, c in sorted(unknown.items()))
        raise Unprocessable(f"unknown classes (not in the model's labels): {detail}")
    now = utcnow()
    for sample_id, label in items:
        row = rows[sample_id]
        row.labelled = True
        row.label = label.label
        row.boxes = [b.model_dump() for b in label.boxes] if label.boxes is not None else None
        row.labelled_by = actor[:64]
        row.labelled_at = now
        session.add(row)
    session.commit()
    out = []
    for sample_id, _ in items:
        session.refresh(rows[sample_id])
        out.append(rows[sample_id])
    return out


def manifest_labels(session: Session, name: str, version: str) -> set[str] | None:
    """The class names the version's manifest lists; None when it lists none (or is gone)."""
    model = session.get(ModelVersionRow, (name, version))
    if model is None:
        return None
    labels: Any = model.manifest.get("labels") or []
    return {str(label) for label in labels} or None


def _names(values: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:limit])
    more = len(values) - limit
    return shown + (f" and {more} more" if more > 0 else "")
