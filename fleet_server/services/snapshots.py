"""Dataset snapshots: the labelled samples of a model, laid out for training or labelling, with
a manifest whose sha256 is the ``dataset_sha256`` lineage of a model trained on it.

Formats:

* ``imagefolder`` (classification): ``<class>/<sample id>.<ext>`` for each class-labelled
  sample.
* ``coco`` (detection): ``images/<sample id>.<ext>`` and ``annotations.json`` (COCO: images,
  annotations with ``bbox`` = [x, y, width, height] in pixels, categories in manifest order).
* ``labelstudio``: ``images/<sample id>.<ext>`` and ``tasks.json``, Label Studio's import
  format (a list of tasks, ``data.image`` the file's path, ``data.edgefleet_sample`` the sample
  id, a sample's current label as an annotation and the device's top-1 as a prediction). Its
  JSON export comes back in with ``edgefleet fleet samples import``.

The manifest lists every file (path, sha256, size, sample id) sorted by path, the counts and
the filters, and nothing that changes between two exports of the same samples (no time, no
server URL): the same samples and labels give the same manifest bytes and the same sha256.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlmodel import Session

from edgefleet.contract.parsing import canonical_json
from fleet_server.models import ModelVersion as ModelVersionRow
from fleet_server.models import Sample
from fleet_server.services.errors import BadRequest, NotFound
from fleet_server.services.samples import SampleFilter, count_samples, iter_samples
from fleet_server.storage import ArtifactStore, StoreError, sample_key

SnapshotFormat = Literal["imagefolder", "coco", "labelstudio"]
FORMATS: tuple[SnapshotFormat, ...] = ("imagefolder", "coco", "labelstudio")
#: Most samples one snapshot may hold (the manifest stays a few tens of MB).
MAX_SNAPSHOT_SAMPLES = 100_000
SNAPSHOT_KIND = "edgefleet.dataset-snapshot"
_EXT = {"image/jpeg": "jpg", "application/x-npy": "npy"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Snapshot:
    manifest: dict[str, Any]
    #: Generated files (path → JSON document) the manifest lists beside the sample files.
    documents: dict[str, Any]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.manifest)).hexdigest()


def class_dir(label: str) -> str:
    """A class name as one safe directory name (other characters become '_')."""
    name = _UNSAFE.sub("_", label)[:100]
    return "_" if name in ("", ".", "..") else name


def build_snapshot(
    *,
    session: Session,
    store: ArtifactStore | None,
    model: str,
    version: str | None,
    fmt: SnapshotFormat,
    device: str | None = None,
    reason: str | None = None,
) -> Snapshot:
    if fmt not in FORMATS:
        raise BadRequest(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    labelled = None if fmt == "labelstudio" else True
    flt = SampleFilter(
        model=model, version=version, device=device, reason=reason, labelled=labelled
    )
    total = count_samples(session=session, flt=flt)
    if total > MAX_SNAPSHOT_SAMPLES:
        raise BadRequest(
            f"{total} samples match; a snapshot holds at most {MAX_SNAPSHOT_SAMPLES}: narrow it "
            "with --version, --device or --reason"
        )
    rows = list(iter_samples(session=session, flt=flt))
    # A classification snapshot holds the class-labelled samples, a detection one the boxed.
    if fmt == "imagefolder":
        rows = [r for r in rows if r.label is not None]
    elif fmt == "coco":
        rows = [r for r in rows if r.boxes is not None]
    if not rows:
        what = {"imagefolder": "class-labelled ", "coco": "box-labelled "}.get(fmt, "")
        raise NotFound(f"no {what}samples of {model} match")
    classes = _classes(session, model, rows)
    files: list[FileEntry]
    documents: dict[str, Any]
    if fmt == "imagefolder":
        files, documents = _imagefolder(rows), {}
    elif fmt == "coco":
        files, documents = _coco(rows, classes, store)
    else:
        files, documents = _labelstudio(rows)
    per_class: Counter[str] = Counter()
    for row in rows:
        if row.label is not None:
            per_class[row.label] += 1
        for box in row.boxes or []:
            per_class[str(box["label"])] += 1
    listed = [
        {"path": path, "sha256": sha, "size": size, "sample": sample}
        for path, sha, size, sample in sorted(files)
    ]
    for path, doc in sorted(documents.items()):
        raw = canonical_json(doc)
        listed.append({"path": path, "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)})
    listed.sort(key=lambda item: str(item["path"]))
    manifest = {
        "kind": SNAPSHOT_KIND,
        "format_version": 1,
        "format": fmt,
        "model": model,
        "filters": {k: v for k, v in flt.as_dict().items() if k != "model"},
        "classes": classes,
        "counts": {
            "samples": len(rows),
            "labelled": sum(1 for r in rows if r.labelled),
            "per_class": dict(sorted(per_class.items())),
            "versions": dict(sorted(Counter(r.model_version for r in rows).items())),
        },
        "files": listed,
    }
    return Snapshot(manifest=manifest, documents=documents)


def _classes(session: Session, model: str, rows: list[Sample]) -> list[str]:
    """The class list: the newest version's manifest labels (their order is the class index),
    then any other label used, sorted."""
    versions = sorted({r.model_version for r in rows})
    ordered: list[str] = []
    for version in reversed(versions):
        row = session.get(ModelVersionRow, (model, version))
        if row is not None and row.manifest.get("labels"):
            ordered = [str(x) for x in row.manifest["labels"]]
            break
    used = {r.label for r in rows if r.label is not None}
    used |= {str(b["label"]) for r in rows for b in r.boxes or []}
    return ordered + sorted(used - set(ordered))


FileEntry = tuple[str, str, int, int]


def _file(row: Sample, folder: str) -> FileEntry:
    return (
        f"{folder}/{row.id}.{_EXT.get(row.content_type, 'bin')}",
        row.sha256,
        row.size,
        row.id or 0,
    )


def _imagefolder(rows: Iterable[Sample]) -> list[FileEntry]:
    return [_file(r, class_dir(r.label)) for r in rows if r.label is not None]


def _coco(
    rows: list[Sample], classes: list[str], store: ArtifactStore | None
) -> tuple[list[FileEntry], dict[str, Any]]:
    index = {name: i + 1 for i, name in enumerate(classes)}
    files: list[FileEntry] = []
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for row in rows:
        if row.boxes is None:
            continue
        entry = _file(row, "images")
        files.append(entry)
        width, height = _dimensions(row, store)
        images.append({"id": row.id, "file_name": entry[0], "width": width, "height": height})
        for box in row.boxes:
            w, h = box["x2"] - box["x1"], box["y2"] - box["y1"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": row.id,
                    "category_id": index[str(box["label"])],
                    "bbox": [box["x1"], box["y1"], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": name} for name, i in index.items()]
    document = {"images": images, "annotations": annotations, "categories": categories}
    return files, {"annotations.json": document}


def _labelstudio(rows: list[Sample]) -> tuple[list[FileEntry], dict[str, Any]]:
    files, tasks = [], []
    for row in rows:
        entry = _file(row, "images")
        files.append(entry)
        task: dict[str, Any] = {
            "id": row.id,
            "data": {
                "image": entry[0],
                "edgefleet_sample": row.id,
                "model_version": row.model_version,
                "reason": row.reason,
            },
        }
        if row.predicted is not None:
            task["predictions"] = [
                {
                    "model_version": row.model_version,
                    "score": row.confidence,
                    "result": [_choice(row.predicted)],
                }
            ]
        if row.label is not None:
            task["annotations"] = [{"result": [_choice(row.label)]}]
        tasks.append(task)
    return files, {"tasks.json": tasks}


def _choice(label: str) -> dict[str, Any]:
    return {
        "from_name": "choice",
        "to_name": "image",
        "type": "choices",
        "value": {"choices": [label]},
    }


def _dimensions(row: Sample, store: ArtifactStore | None) -> tuple[int | None, int | None]:
    """Width and height from the content's own header (JPEG SOF or .npy shape)."""
    if store is None:
        return None, None
    try:
        head = b"".join(store.read(sample_key(row.sha256), 0, min(row.size, 64 * 1024)))
    except StoreError:
        return None, None
    return image_size(head)


def image_size(head: bytes) -> tuple[int | None, int | None]:
    if head.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 9 < len(head):
            if head[pos] != 0xFF:
                return None, None
            marker = head[pos + 1]
            length = struct.unpack(">H", head[pos + 2 : pos + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", head[pos + 5 : pos + 9])
                return width, height
            pos += 2 + length
        return None, None
    if head.startswith(b"\x93NUMPY"):
        match = re.search(rb"'shape':\s*\((\d+),\s*(\d+)", head[:512])
        if match:
            return int(match.group(2)), int(match.group(1))
    return None, None
