"""The bounded tar reader: reads what tarfile and GNU tar write, refuses hostile headers before
reading them, and keeps a device's (or server's) memory flat whatever the stream declares."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edgefleet.artifact import ArtifactError, unpack_bundle
from edgefleet.tar_stream import MAX_META_BYTES, TarStream, TarStreamError
from tests.utils.hostile_bundles import BLOCK, HOSTILE, header, pax_record

ROOT = Path(__file__).resolve().parents[2]
NAMES = [
    "manifest.json",
    "empty.bin",
    "d/" * 60 + "deep.bin",  # 125 characters: ustar prefix, GNU long name or PAX path
    "ünïcode-名前.bin",
    "x" * 99 + ".bin",
]


def _payload(i: int) -> bytes:
    return bytes(range(256)) * i + b"tail" * (i % 3)


def _read_all(raw: bytes, **limits: int) -> dict[str, bytes]:
    stream = TarStream(
        io.BytesIO(raw),
        max_members=limits.get("max_members", 256),
        max_data_bytes=limits.get("max_data_bytes", 1 << 30),
    )
    out = {}
    for member in stream:
        chunks = []
        while chunk := stream.read(100):
            chunks.append(chunk)
        out[member.name] = b"".join(chunks)
        assert len(out[member.name]) == member.size
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_what_tarfile_writes(fmt: int) -> None:
    names = NAMES
    if fmt == tarfile.USTAR_FORMAT:  # ASCII only, and a last component of at most 100
        names = [n for n in NAMES if n.isascii() and len(n.rsplit("/", 1)[-1]) <= 100]
    members = {name: _payload(i) for i, name in enumerate(names)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert _read_all(buf.getvalue()) == members


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command on this machine")
@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_reads_what_gnu_tar_writes(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    members = {name: _payload(i) for i, name in enumerate(NAMES)}
    for name, data in members.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    out = tmp_path / "b.tar.gz"
    subprocess.run(
        ["tar", f"--format={fmt}", "-czf", str(out), "-C", str(src), *NAMES],  # noqa: S607
        check=True,
        timeout=30,
    )
    assert _read_all(out.read_bytes()) == members


def _gz(*blocks: bytes) -> bytes:
    return gzip.compress(b"".join(blocks) + bytes(2 * BLOCK), mtime=0)


def _pax(records: bytes) -> bytes:
    return header("././@PaxHeader", len(records), b"x") + records.ljust(BLOCK, b"\0")


def test_pax_size_and_path_records_apply_to_the_next_member() -> None:
    raw = _gz(
        _pax(pax_record("size", "1024") + pax_record("path", "renamed.b")),
        header("short.bin", 0, b"0"),  # the PAX record's size wins, as POSIX says
        b"a" * 1024,
    )
    assert _read_all(raw) == {"renamed.b": b"a" * 1024}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (_gz(header("model.onnx", 10**9, b"0")), "limit"),
        (_gz(header("big", MAX_META_BYTES + 1, b"x")), "PAX header of"),
        (_gz(header("big", MAX_META_BYTES + 1, b"L")), "GNU long name of"),
        (_gz(_pax(b"99 path=x\n")), "malformed PAX"),
        (_gz(_pax(b"12 pathx\n\n\n")), "malformed PAX"),
        (_gz(_pax(pax_record("GNU.sparse.major", "1") + b"\0\0\0")), "sparse"),
        (_gz(_pax(pax_record("size", "-1024"))), "not a size"),
        (_gz(header("link", 0, b"2")), "symbolic link, not a regular file"),
        (_gz(header("dir/", 0, b"5")), "directory"),
        (_gz(header("dir/", 0, b"0")), "directory"),
        (_gz(header("g", 20, b"g") + b"18 comment=global\n".ljust(BLOCK, b"\0")), "global PAX"),
        (_gz(b"\1" * BLOCK), "checksum"),
        (_gz(_pax(pax_record("path", "orphan.x"))), "ends after a PAX header"),
        (gzip.compress(header("cut.bin", 4096, b"0") + b"x" * 100, mtime=0), "ends inside"),
        (b"plainly not gzip", "gzip"),
    ],
)
def test_refuses_before_reading(raw: bytes, fragment: str) -> None:
    with pytest.raises(TarStreamError, match=fragment):
        _read_all(raw, max_data_bytes=1 << 20)


def test_member_count_is_bounded() -> None:
    raw = _gz(*(header(f"f{i}", 0, b"0") for i in range(5)))
    assert len(_read_all(raw, max_members=5)) == 5
    with pytest.raises(TarStreamError, match="too many members"):
        _read_all(raw, max_members=4)


MEASURE = """
import json, resource, sys, time, tempfile
from pathlib import Path
from edgefleet.artifact import ArtifactError, unpack_bundle
from tests.utils.hostile_bundles import HOSTILE
work = Path(tempfile.mkdtemp())
bundles = {name: build() for name, build in HOSTILE.items()}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = {}
for name, raw in bundles.items():
    (work / "b.tar.gz").write_bytes(raw)
    started = time.monotonic()
    try:
        unpack_bundle(work / "b.tar.gz", work / "out")
        results[name] = "accepted"
    except ArtifactError as err:
        results[name] = "refused: " + str(err)
    except BaseException as err:
        results[name] = "crashed: " + repr(err)
    results[name + " s"] = time.monotonic() - started
left = sorted(p.name for p in work.iterdir() if p.name != "b.tar.gz")
rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("fleet_server", "converters"))
print(json.dumps({"rise_kb": rise, "results": results, "left": left, "heavy": heavy}))
"""


def test_hostile_bundles_cost_a_device_no_memory() -> None:
    """What the agent calls (``unpack_bundle``) in a process of its own, as on a device: peak RSS
    rises by less than 50 MB over all hostile bundles (tarfile: +832 MB, 15 s for the sparse
    map alone), each refused with a reason, nothing left behind."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    results = report["results"]
    for name in HOSTILE:
        assert results[name].startswith("refused: "), (name, results[name])
        assert results[f"{name} s"] < 2, (name, results[f"{name} s"])
    assert report["rise_kb"] < 50 * 1024, report
    assert report["left"] == [] and report["heavy"] == []


def test_unpack_refuses_a_file_where_a_directory_must_go(tmp_path: Path) -> None:
    raw = _gz(header("a", 1, b"0"), b"x".ljust(BLOCK, b"\0"), header("a/b", 0, b"0"))
    (tmp_path / "b.tar.gz").write_bytes(raw)
    with pytest.raises(ArtifactError, match="cannot unpack"):
        unpack_bundle(tmp_path / "b.tar.gz", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.gz"]
