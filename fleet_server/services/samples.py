"""Captured samples: storing a device's upload (hostile input), listing, reading, deleting.

An upload is checked in this order, each refusal a 4xx with the reason, counted by reason
(:class:`SampleStats`) and storing nothing: size (413), metadata (422), content sniffed from its
first bytes, never the declared type (415), the caller is that device (403), the model is one
the device runs or was assigned (403), size and sha256 match the metadata (409), a replay of
``(device_id, sample_id)`` (200 with the stored row, or 409 if its content differs), the model
has a capture policy (403) and the device's budget for the UTC day (429, the effective policy's
``max_per_day`` and ``max_bytes_per_day``). The budget is taken and the row inserted in one
transaction; the content goes to the store under ``samples/<sha256>`` only if absent (the
same image captured twice is stored once).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client.core import CounterMetricFamily
from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from edgefleet.contract import ContractError, SampleMeta
from edgefleet.contract.parsing import load_json_object, validate
from fleet_server.models import Device, Sample, SampleBudget
from fleet_server.models.types import utcnow
from fleet_server.services.capture import effective_policy
from fleet_server.services.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceError,
    TooLarge,
    TooManyRequests,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from fleet_server.storage import ArtifactStore, MissingBundle, StoreError, sample_key

log = logging.getLogger(__name__)

#: Largest ``meta`` part (a SampleMeta with 1,000 outputs and 64-channel stats is ~40 KB).
MAX_META_BYTES = 256 * 1024
#: The numpy ``.npy`` magic (format version bytes follow).
NPY_MAGIC = b"\x93NUMPY"
#: Every JPEG starts with SOI (FF D8) and a marker (FF).
JPEG_MAGIC = b"\xff\xd8\xff"
#: How long a 429 asks the device to wait: the budget is per UTC day; an hour is a fair retry.
BUDGET_RETRY_S = 3600


class SampleStats:
    """Refused uploads by reason and stored ones, for ``/metrics`` (this process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.refused: Counter[str] = Counter()
        self.stored = 0
        self.replayed = 0

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] += 1

    def count(self, *, replay: bool) -> None:
        with self._lock:
            if replay:
                self.replayed += 1
            else:
                self.stored += 1

    def collect(self) -> Iterator[Any]:
        refused = CounterMetricFamily(
            "edgefleet_sample_uploads_refused",
            "Sample uploads refused, by reason (nothing of them was stored).",
            labels=["reason"],
        )
        with self._lock:
            for reason, value in sorted(self.refused.items()):
                refused.add_metric([reason], value)
            stored, replayed = self.stored, self.replayed
        yield refused
        yield CounterMetricFamily(
            "edgefleet_sample_uploads_stored", "Sample uploads stored.", value=stored
        )
        yield CounterMetricFamily(
            "edgefleet_sample_uploads_replayed",
            "Uploads of a sample already stored (answered 200, nothing added).",
            value=replayed,
        )


class Refused(ServiceError):
    """Wraps a refusal with the reason label it is counted under."""


@dataclass(frozen=True)
class Stored:
    row: Sample
    replay: bool
    content_shared: bool


def sniff(content: bytes) -> str | None:
    """The content type the bytes themselves show (None: neither a JPEG nor a .npy)."""
    if content.startswith(JPEG_MAGIC):
        return "image/jpeg"
    if content.startswith(NPY_MAGIC) and len(content) >= 10:
        return "application/x-npy"
    return None


def parse_meta(raw: bytes) -> SampleMeta:
    try:
        data = load_json_object(raw, what="sample meta", max_bytes=MAX_META_BYTES)
        return validate(SampleMeta, data, what="sample meta")
    except ContractError as err:
        raise Unprocessable(str(err)) from err


def store_upload(
    *,
    session: Session,
    store: ArtifactStore,
    stats: SampleStats,
    caller_device: str | None,
    meta_raw: bytes,
    content: Path,
    size: int,
    sha256: str,
    head: bytes,
    max_bytes: int,
) -> Stored:
    """Check and store one upload (``content`` is the received file, moved into the store when
    its sha256 is new). Every refusal is counted in ``stats`` under its reason."""
    try:
        return _store_upload(
            session=session,
            store=store,
            caller_device=caller_device,
            meta_raw=meta_raw,
            content=content,
            size=size,
            sha256=sha256,
            head=head,
            max_bytes=max_bytes,
            stats=stats,
        )
    except _Refusal as refusal:
        stats.refuse(refusal.reason)
        raise refusal.error from None


class _Refusal(Exception):
    def __init__(self, reason: str, error: ServiceError) -> None:
        super().__init__(str(error))
        self.reason = reason
        self.error = error


def _store_upload(
    *,
    session: Session,
    store: ArtifactStore,
    stats: SampleStats,
    caller_device: str | None,
    meta_raw: bytes,
    content: Path,
    size: int,
    sha256: str,
    head: bytes,
    max_bytes: int,
) -> Stored:
    if caller_device is None:
        raise _Refusal("not_a_device", Forbidden("only a device uploads samples (device token)"))
    if size > max_bytes:
        raise _Refusal("too_big", TooLarge(f"sample is larger than {max_bytes} bytes"))
    try:
        meta = parse_meta(meta_raw)
    except Unprocessable as err:
        raise _Refusal("bad_meta", err) from err
    sniffed = sniff(head)
    if sniffed is None:
        raise _Refusal(
            "not_an_image",
            UnsupportedMediaType("the content is neither a JPEG image nor a numpy .npy file"),
        )
    if sniffed != meta.content_type:
        raise _Refusal(
            "wrong_type",
            UnsupportedMediaType(f"meta says {meta.content_type} but the content is {sniffed}"),
        )
    if meta.device_id != caller_device:
        raise _Refusal(
            "other_device",
            Forbidden(f"device {caller_device!r} cannot upload for device {meta.device_id!r}"),
        )
    device = session.get(Device, caller_device)
    if device is None:
        raise _Refusal("other_device", Forbidden(f"device {caller_device!r} is not registered"))
    name, version = meta.model.name, meta.model.version
    if (name, version) not in _models_of(device):
        raise _Refusal(
            "other_model",
            Forbidden(
                f"device {caller_device!r} does not run {name}@{version} (runs "
                f"{device.running_name}@{device.running_version}, assigned "
                f"{device.desired_name}@{device.desired_version})"
            ),
        )
    if meta.size != size:
        raise _Refusal(
            "size_mismatch", Conflict(f"meta says {meta.size} bytes, the content has {size}")
        )
    if meta.sha256.lower() != sha256:
        raise _Refusal(
            "sha_mismatch",
            Conflict(f"meta says sha256 {meta.sha256[:64]}, the content has {sha256}"),
        )
    existing = _by_sample_id(session, caller_device, meta.sample_id)
    if existing is not None:
        return _replay(existing, sha256, stats)
    policy = effective_policy(session=session, name=name, version=version)
    if policy is None:
        raise _Refusal(
            "no_policy",
            Forbidden(f"model {name}@{version} has no capture policy: nothing is to be captured"),
        )
    row = Sample(
        sample_id=meta.sample_id,
        device_id=caller_device,
        model_name=name,
        model_version=version,
        reason=meta.reason,
        captured_at=meta.captured_at,
        confidence=meta.confidence,
        margin=meta.margin,
        predicted=meta.predicted,
        outputs=list(meta.outputs),
        input_score=meta.input_score,
        input_stats=msgspec.to_builtins(meta.input_stats) if meta.input_stats else None,
        content_type=meta.content_type,
        sha256=sha256,
        size=size,
    )
    day = utcnow().date().isoformat()
    if not _take_budget(
        session,
        device_id=caller_device,
        day=day,
        size=size,
        max_count=policy.max_per_day,
        max_bytes=policy.max_bytes_per_day,
    ):
        session.rollback()
        raise _Refusal(
            "over_budget",
            TooManyRequests(
                f"device {caller_device!r} is over its sample budget for {day} "
                f"({policy.max_per_day} samples, {policy.max_bytes_per_day} bytes a day)",
                retry_after_s=BUDGET_RETRY_S,
            ),
        )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        # The same (device, sample_id) raced in: that one is stored; this is its replay.
        session.rollback()
        existing = _by_sample_id(session, caller_device, meta.sample_id)
        if existing is None:
            raise
        return _replay(existing, sha256, stats)
    key = sample_key(sha256)
    shared = True
    try:
        if not store.exists(key):
            shared = False
            try:
                store.put(key, content)
            except StoreError:
                if not store.exists(key):  # not a concurrent put of the same content
                    raise
                shared = True
    except StoreError as err:
        session.rollback()
        raise Unavailable(f"the sample store refused the content: {err}") from err
    session.commit()
    session.refresh(row)
    stats.count(replay=False)
    return Stored(row=row, replay=False, content_shared=shared)


def _replay(existing: Sample, sha256: str, stats: SampleStats) -> Stored:
    if existing.sha256 != sha256:
        raise _Refusal(
            "sample_id_reused",
            Conflict(
                f"sample {existing.sample_id!r} of device {existing.device_id!r} is stored with "
                "other content"
            ),
        )
    stats.count(replay=True)
    return Stored(row=existing, replay=True, content_shared=True)


def _models_of(device: Device) -> set[tuple[str | None, str | None]]:
    """What a device may upload samples for: what it runs, what it is assigned, and what it
    last said it was assigned (a sample captured before a switch is uploaded after it)."""
    pairs = {
        (device.running_name, device.running_version),
        (device.desired_name, device.desired_version),
        (device.reported_desired_name, device.reported_desired_version),
    }
    return {p for p in pairs if p[0] is not None and p[1] is not None}


def _by_sample_id(session: Session, device_id: str, sample_id: str) -> Sample | None:
    return session.exec(
        select(Sample).where(Sample.device_id == device_id, Sample.sample_id == sample_id)
    ).first()


def _take_budget(
    session: Session, *, device_id: str, day: str, size: int, max_count: int, max_bytes: int
) -> bool:
    """Count one sample of ``size`` bytes against the device's day, in the caller's
    transaction; False (nothing taken) when that would exceed either limit. One conditional
    UPDATE, so concurrent uploads cannot both take the last place."""
    if size > max_bytes:
        return False
    for _ in range(2):
        taken = session.execute(
            update(SampleBudget)
            .where(
                col(SampleBudget.device_id) == device_id,
                col(SampleBudget.day) == day,
                col(SampleBudget.count) < max_count,
                col(SampleBudget.bytes) + size <= max_bytes,
            )
            .values(
                count=col(SampleBudget.count) + 1,
                bytes=col(SampleBudget.bytes) + size,
            )
        )
        if taken.rowcount:  # type: ignore[attr-defined]
            return True
        if session.get(SampleBudget, (device_id, day)) is not None:
            return False
        if max_count < 1:
            return False
        try:
            with session.begin_nested():
                session.add(SampleBudget(device_id=device_id, day=day, count=1, bytes=size))
            return True
        except IntegrityError:
            continue  # another upload created the day's row first: take from it
    return False


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleFilter:
    model: str | None = None
    version: str | None = None
    device: str | None = None
    reason: str | None = None
    labelled: bool | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if value is not None:
                out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


def _where(query: Any, flt: SampleFilter) -> Any:
    if flt.model is not None:
        query = query.where(Sample.model_name == flt.model)
    if flt.version is not None:
        query = query.where(Sample.model_version == flt.version)
    if flt.device is not None:
        query = query.where(Sample.device_id == flt.device)
    if flt.reason is not None:
        query = query.where(Sample.reason == flt.reason)
    if flt.labelled is not None:
        query = query.where(Sample.labelled == flt.labelled)
    if flt.since is not None:
        query = query.where(col(Sample.captured_at) >= flt.since)
    if flt.until is not None:
        query = query.where(col(Sample.captured_at) < flt.until)
    return query


def encode_cursor(sample_id: int) -> str:
    return base64.urlsafe_b64encode(f"s{sample_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("s"):
            raise ValueError(cursor)
        return int(text[1:])
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest("invalid cursor (use next_cursor of the previous page)") from err


def list_samples(
    *, session: Session, flt: SampleFilter, limit: int, cursor: str | None
) -> tuple[Sequence[Sample], str | None]:
    """Newest first (by id), ``limit`` rows after ``cursor``; the next page's cursor or None."""
    query = _where(select(Sample), flt)
    if cursor is not None:
        query = query.where(col(Sample.id) < decode_cursor(cursor))
    rows = session.exec(query.order_by(col(Sample.id).desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1].id or 0) if more and rows else None)


def iter_samples(*, session: Session, flt: SampleFilter, batch: int = 1000) -> Iterator[Sample]:
    """Every matching sample, oldest first, in batches (for exports)."""
    last = 0
    while True:
        query = _where(select(Sample), flt).where(col(Sample.id) > last)
        rows = session.exec(query.order_by(col(Sample.id)).limit(batch)).all()
        yield from rows
        if len(rows) < batch:
            return
        last = rows[-1].id or 0


def get_sample(*, session: Session, sample_id: int) -> Sample:
    row = session.get(Sample, sample_id)
    if row is None:
        raise NotFound(f"sample {sample_id} not found")
    return row


def content(*, store: ArtifactStore, row: Sample) -> Iterator[bytes]:
    try:
        return store.read(sample_key(row.sha256), 0, row.size)
    except MissingBundle as err:
        raise NotFound(f"the content of sample {row.id} is gone from the store") from err
    except StoreError as err:
        raise Unavailable(f"the sample store cannot read it: {err}") from err


def delete_samples(*, session: Session, store: ArtifactStore, ids: Sequence[int]) -> int:
    """Delete rows, then the content of each sha256 no remaining row refers to."""
    if not ids:
        return 0
    rows = session.exec(select(Sample).where(col(Sample.id).in_(ids))).all()
    shas = {r.sha256 for r in rows}
    for row in rows:
        session.delete(row)
    session.commit()
    if shas:
        still = set(
            session.exec(select(Sample.sha256).where(col(Sample.sha256).in_(sorted(shas)))).all()
        )
        for sha in sorted(shas - still):
            try:
                store.delete(sample_key(sha))
            except StoreError as err:
                log.warning("sample content not deleted", extra={"sha256": sha, "error": str(err)})
    return len(rows)


def count_samples(*, session: Session, flt: SampleFilter) -> int:
    query = _where(select(func.count()).select_from(Sample), flt)
    return int(session.exec(query).one())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()
