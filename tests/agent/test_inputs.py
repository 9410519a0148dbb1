from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from agent.config import FolderInputConfig
from agent.config_types import convert
from agent.inputs import SOURCES, InputItem, SourceContext, create_source


def _source(path: Path, errors: list[tuple[str, str]], **kw: object) -> Iterator[InputItem]:
    config = convert({"type": "folder", "path": path, **kw}, FolderInputConfig)
    stop = threading.Event()
    source = create_source(
        config, context=SourceContext(on_error=lambda k, d: errors.append((k, d)))
    )
    return source.items(stop)


def test_registry() -> None:
    assert set(SOURCES) == {"folder", "video", "camera", "stream", "http", "batch"}


def test_sorted_filtered_files(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", ".hidden.png", "c.png.part", "d.txt", "e.npy"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "sub.png").mkdir()
    errors: list[tuple[str, str]] = []
    items = _source(tmp_path, errors, rate_hz=1000, pattern="*.png")
    assert [next(items).source for _ in range(2)] == ["a.png", "b.png"]
    items = _source(tmp_path, errors, rate_hz=1000)
    got = [next(items) for _ in range(4)]
    assert [i.source for i in got] == ["a.png", "b.png", "d.txt", "e.npy"]
    assert got[0].data == b"a.png"
    assert errors == []


def test_once_mode_picks_up_new_files(tmp_path: Path) -> None:
    (tmp_path / "1.png").write_bytes(b"1")
    items = _source(tmp_path, [], rate_hz=1000, poll_s=0.05)
    assert next(items).source == "1.png"
    threading.Timer(0.2, lambda: (tmp_path / "0.png").write_bytes(b"0")).start()
    assert next(items).source == "0.png"  # new file, even though it sorts first


def test_loop_mode_cycles(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"x")
    items = _source(tmp_path, [], rate_hz=1000, loop=True)
    assert [next(items).source for _ in range(5)] == ["a", "b", "a", "b", "a"]


def test_rate_limit(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    items = _source(tmp_path, [], rate_hz=50, loop=True)
    start = time.monotonic()
    for _ in range(11):
        next(items)
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 1.5  # 10 periods of 20 ms; generous upper bound for busy CI


def test_missing_folder_is_reported_and_retried(tmp_path: Path) -> None:
    errors: list[tuple[str, str]] = []
    folder = tmp_path / "later"
    items = _source(folder, errors, rate_hz=1000, poll_s=0.05)

    def create() -> None:
        folder.mkdir()
        (folder / "x.png").write_bytes(b"x")

    threading.Timer(0.2, create).start()
    assert next(items).source == "x.png"
    assert errors and errors[0][0] == "input_unavailable"


def test_oversized_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 101)
    (tmp_path / "small").write_bytes(b"x" * 100)
    errors: list[tuple[str, str]] = []
    items = _source(tmp_path, errors, rate_hz=1000, max_file_bytes=100)
    assert next(items).source == "small"
    assert errors == [("input_too_large", "big: larger than 100 bytes")]


def test_stop_ends_the_iteration(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    config = FolderInputConfig(path=tmp_path, loop=True, rate_hz=1)
    stop = threading.Event()
    items = create_source(config, context=SourceContext(on_error=lambda k, d: None)).items(stop)
    next(items)
    threading.Timer(0.1, stop.set).start()
    start = time.monotonic()
    assert list(items) == []
    assert time.monotonic() - start < 0.5
