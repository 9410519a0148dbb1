"""``--target`` parsing (hostile input included), the ssh command line, and the probe's
least-squares trend: no network needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil import probe
from hil.ssh.errors import HilError
from hil.ssh.target import Board, Target, parse_target


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh://pi@raspberrypi.local", Target("pi", "raspberrypi.local", 22)),
        ("ssh://root@10.213.4.2:2222", Target("root", "10.213.4.2", 2222)),
        ("ssh://edge_1@board-7", Target("edge_1", "board-7", 22)),
    ],
)
def test_good_targets(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("pi@raspberrypi", "ssh://USER@HOST"),
        ("http://pi@host", "ssh://USER@HOST"),
        ("ssh://host", "user name"),
        ("ssh://-oProxyCommand=touch@host", "user name"),
        ("ssh://pi@-oProxyCommand=x", "host name"),
        ("ssh://pi@host;rm", "host name"),
        ("ssh://pi@host/path", "no path"),
        ("ssh://pi:secret@host", "no path, query or password"),
        ("ssh://pi@host:0", "out of range"),
        ("ssh://pi@host:99999", "bad port"),
        ("ssh://pi@host:22x", "bad port"),
        ("ssh://pi@ho st", "whitespace"),
        ("ssh://pi@host\n-oX", "whitespace"),
        ("ssh://pi@" + "a" * 400, "characters long"),
        ("ssh://pi@" + "a." * 140 + "b", "host name"),
        ("ssh://pi@" + "a" * 64, "host name"),
    ],
)
def test_bad_targets_are_one_clear_error(text: str, needle: str) -> None:
    with pytest.raises(HilError) as info:
        parse_target(text)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_hostile_host_is_rejected_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(HilError):
        parse_target("ssh://pi@" + "a-" * 120 + "!")
    assert time.monotonic() - started < 1.0  # no regex backtracking blow-up


def test_ssh_runs_batch_mode_against_our_known_hosts(tmp_path: Path) -> None:
    board = Board(
        Target("pi", "board", 2222), known_hosts=tmp_path / "kh", identity=tmp_path / "key"
    )
    argv = board.ssh_argv("uname -m")
    joined = " ".join(argv)
    for option in ("BatchMode=yes", f"UserKnownHostsFile={tmp_path / 'kh'}",
                   "StrictHostKeyChecking=accept-new", "GlobalKnownHostsFile=/dev/null",
                   "IdentitiesOnly=yes"):  # fmt: skip
        assert option in joined
    assert argv[:5] == ["ssh", "-p", "2222", "-F", "/dev/null"]
    assert argv[-3:] == ["pi@board", "--", "uname -m"]


def test_unreachable_board_is_one_line(tmp_path: Path) -> None:
    # Port 9 on loopback: nothing listens, ssh fails at once with exit 255.
    board = Board(Target("pi", "127.0.0.1", 9), known_hosts=tmp_path / "kh")
    with pytest.raises(HilError) as info:
        board.run("true", timeout=30)
    assert "ssh failed" in str(info.value) and "\n" not in str(info.value)


def test_slope_is_least_squares() -> None:
    assert probe.slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert probe.slope([0, 1, 2, 3], [5, 5, 5, 5]) == 0.0
    assert probe.slope([1, 1], [0, 9]) == 0.0  # no spread in x: no slope
    assert probe.slope([0, 1, 2], [0, 2, 1]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 x values but 3"):
        probe.slope([0, 1], [0, 1, 2])


def test_trend_drops_the_warm_up_and_reports_per_hour() -> None:
    # RSS climbs fast for the first 60 s (imports, warm-up), then 0.5 MB per hour.
    rows = [{"t": t, "rss_mb": 40 + (t if t < 60 else 60 + (t - 60) * 0.5 / 3600), "fds": 12}
            for t in range(0, 1800, 10)]  # fmt: skip
    kept = probe.trend(rows, warmup_s=60)
    assert kept["rss_mb"]["slope_per_h"] == pytest.approx(0.5, abs=1e-3)
    assert kept["fds"]["slope_per_h"] == 0.0 and kept["samples"] == 174
    assert probe.trend(rows, warmup_s=0)["rss_mb"]["slope_per_h"] > 10


def test_probe_samples_a_child_process_and_ends_with_it(tmp_path: Path) -> None:
    parent = subprocess.Popen(["sh", "-c", "sleep 3 & wait"])
    out = tmp_path / "probe.jsonl"
    done = subprocess.run(
        [sys.executable, probe.__file__, "--pid", str(parent.pid), "--child", "--every", "0.2",
         "--out", str(out)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    parent.wait(10)
    assert done.returncode == 0, done.stderr
    rows = probe.read_rows(out)
    assert len(rows) >= 5
    assert {row["pid"] for row in rows} != {parent.pid}  # the child: the sleep
    assert all(row["threads"] == 1 and row["fds"] >= 3 and row["rss_mb"] > 0 for row in rows)
    with out.open("a") as fh:
        fh.write('{"t": 9, "rss')  # a torn last line (the probe was killed) is dropped
    assert probe.read_rows(out) == rows
    json.dumps(rows)


def test_probe_refuses_bad_intervals(tmp_path: Path) -> None:
    assert probe.main(["--pid", str(os.getpid()), "--out", str(tmp_path / "x"),
                       "--every", "0"]) == 2  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--target", "pi@board"], "--target must look like ssh://USER@HOST[:PORT]"),
        (["--target", "ssh://pi@board", "--server", "http://x:8080"], "--server needs --token"),
        (["--target", "ssh://pi@board", "--models", "digits"], "--models takes FROM,TO"),
        (["--target", "ssh://pi@board", "--duration", "0"], "--duration must be"),
        (["--target", "ssh://pi@board", "--identity", "/nonexistent/key"], "is not a file"),
    ],
)
def test_hil_run_usage_errors_are_one_line(
    extra: list[str], needle: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from edgefleet.cli import main

    args = ["hil", "run", "--scenario", "update", "--known-hosts", str(tmp_path / "kh"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgefleet hil: ") and needle in err and err.count("\n") == 1, err
