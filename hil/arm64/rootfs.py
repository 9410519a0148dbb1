"""Build, cache and enter an emulated board's root filesystem: arm64, or armhf (the 32-bit
Raspberry Pi OS class: ``RootfsSpec.for_arch("armhf")``, Debian's numpy 1 and opencv, some
packages compiled from their sdists inside the board).

The board is a Debian ``minbase`` root (debootstrap, second stage run under qemu-user-static
through binfmt_misc) with the agent's pinned third-party wheels installed into its system
Python. It is cached under ``~/.cache/edgefleet/hil/arm64-<key>`` where the key hashes what
goes into it (suite, Debian packages, pinned requirements): a build took 10 minutes on a
busy 2-core host (docs/hil.md), a cache hit nothing. The edgefleet wheel is never cached: each run
makes a venv (``--system-site-packages``) on a bind mount and installs the wheel there.

Commands run in the board through ``unshare --mount`` + ``chroot``: /proc, /dev and the run's
work folder are mounted in a private mount namespace (not /sys: onnxruntime's cpuinfo reads the
host's x86 CPU topology there and segfaults under qemu; without it, it warns and runs), so
nothing stays mounted on the host when the command ends and parallel runs do not see each
other's folders. The network is the host's: a server on the host's loopback is reachable
from the board as 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet import binfmt

REQUIREMENTS = Path(__file__).with_name("requirements-agent.txt")
#: The armhf board's pins (32-bit Raspberry Pi OS's class, profile rpi-armv7).
REQUIREMENTS_ARMHF = Path(__file__).with_name("requirements-agent-armhf.txt")
#: Where the board sees the per-run work folder (a bind mount of a host folder).
WORK = "/work"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Inside the board: the host's trust store, so pip reaches the registries the host reaches.
BOARD_CA_BUNDLE = "/etc/edgefleet-host-ca.crt"
BOARD_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "PIP_CERT": BOARD_CA_BUNDLE,
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


class Unavailable(RuntimeError):
    """This host cannot build or run the emulated board (not root, no qemu/binfmt, ...)."""


class BuildError(RuntimeError):
    """A step of the root filesystem build failed; the message names the step and its log."""


@dataclass(frozen=True)
class RootfsSpec:
    """Everything that goes into the cached root filesystem (and so into its key)."""

    suite: str = "bookworm"
    arch: str = "arm64"
    mirror: str = "http://deb.debian.org/debian"
    #: python3-pip: the board installs the agent's wheels with Debian's pip (system site).
    packages: tuple[str, ...] = ("python3", "python3-venv", "python3-pip", "ca-certificates")
    requirements: str = field(default_factory=lambda: REQUIREMENTS.read_text())
    #: Pinned packages pip may build from their sdist (everything else: wheels only).
    from_source: tuple[str, ...] = ()

    @classmethod
    def for_arch(cls, arch: str) -> RootfsSpec:
        """The spec of a known board: ``arm64`` (the default) or ``armhf``."""
        if arch == "arm64":
            return cls()
        if arch == "armhf":
            return cls(
                arch="armhf",
                packages=ARMHF_PACKAGES,
                requirements=REQUIREMENTS_ARMHF.read_text(),
                from_source=("msgspec", "cffi"),
            )
        raise ValueError(f"no board for architecture {arch!r}: one of {sorted(binfmt.ENTRIES)}")

    def pins(self) -> list[str]:
        """The requirement lines without comments and blanks (a reworded comment is the same
        root)."""
        lines = (line.split("#", 1)[0].strip() for line in self.requirements.splitlines())
        return [line for line in lines if line]

    def key(self) -> str:
        """The cache key: a hash of suite, arch, packages and the pinned requirements.

        The mirror is left out: the same suite from another mirror is the same root.
        """
        material: dict[str, object] = {
            "suite": self.suite,
            "arch": self.arch,
            "packages": sorted(self.packages),
            "requirements": self.pins(),
        }
        if self.from_source:  # absent when empty: the arm64 key (and its cache) is unchanged
            material["from_source"] = sorted(self.from_source)
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]

    def pip_formats(self) -> list[str]:
        """pip's format options: wheels only, except the packages named in ``from_source``."""
        only = ["--only-binary=:all:"]
        return only + ([f"--no-binary={','.join(self.from_source)}"] if self.from_source else [])


#: Debian bookworm armhf packages for the armhf board. PyPI has no armv7l wheel of numpy,
#: opencv, msgspec or cffi (docs/hil.md): numpy 1.24 and opencv 4.6 come from Debian (numpy 1 is
#: what tflite-runtime 2.14 needs); msgspec and cffi (cryptography 51 needs cffi>=2, Debian has
#: 1.15) build from their sdists, hence the compiler, headers and libffi.
ARMHF_PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-venv",
    "python3-pip",
    "ca-certificates",
    "python3-numpy",
    "python3-opencv",
    "build-essential",
    "python3-dev",
    "libffi-dev",
)


def cache_root() -> Path:
    """``$EDGEFLEET_HIL_CACHE`` or ``~/.cache/edgefleet/hil``."""
    env = os.environ.get("EDGEFLEET_HIL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgefleet" / "hil"


def board_key(spec: RootfsSpec | None = None) -> str:
    return f"{(spec or RootfsSpec()).arch}-{(spec or RootfsSpec()).key()}"


def emulation_problem(arch: str = "arm64") -> str | None:
    """Why this host cannot run the ``arch`` board, or None when it can."""
    if os.geteuid() != 0:
        return f"the emulated {arch} board needs root (chroot, mount namespaces)"
    for tool in ("unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return binfmt.problem(arch, what=f"the {arch} board")


@dataclass(frozen=True)
class Board:
    """A built root filesystem; :meth:`run` executes a command inside it."""

    path: Path
    key: str

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def info(self) -> dict[str, object]:
        meta: dict[str, object] = json.loads((self.path / "board.json").read_text())
        return meta

    def command(self, argv: Sequence[str], *, work: Path | None = None) -> list[str]:
        """The host argv that runs ``argv`` in the board (private mounts, then chroot)."""
        script = (
            'set -e; root="$1"; work="$2"; shift 2; '
            'mount -t proc proc "$root/proc"; '
            'mount --rbind /dev "$root/dev"; '
            f'if [ -n "$work" ]; then mount --bind "$work" "$root{WORK}"; fi; '
            'exec chroot "$root" "$@"'
        )
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "board",
            str(self.rootfs),
            str(work) if work is not None else "",
            *argv,
        ]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**BOARD_ENV, **(extra or {})}

    def run(
        self,
        argv: Sequence[str],
        *,
        work: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 600,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(argv, work=work),
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise BuildError(
                f"`{' '.join(argv)}` failed in the {self.key.split('-', 1)[0]} board "
                f"(exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc

    def popen(
        self,
        argv: Sequence[str],
        *,
        work: Path,
        env: Mapping[str, str] | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(argv, work=work),
            env=self.env(env),
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )


def find_board(spec: RootfsSpec | None = None) -> Board | None:
    """The cached board for ``spec``, or None when it has not been built."""
    spec = spec or RootfsSpec()
    path = cache_root() / board_key(spec)
    if (path / "board.json").is_file() and (path / "rootfs").is_dir():
        return Board(path=path, key=board_key(spec))
    return None


def ensure_board(spec: RootfsSpec | None = None, *, log: Path | None = None) -> Board:
    """The cached board, built first when missing (debootstrap: tens of minutes)."""
    spec = spec or RootfsSpec()
    found = find_board(spec)
    if found is not None:
        return found
    problem = emulation_problem(spec.arch)
    if problem is None and shutil.which("debootstrap") is None:
        problem = "debootstrap is not installed: apt-get install -y debootstrap"
    if problem is not None:
        raise Unavailable(problem)
    return _build(spec, log=log)


def _build(spec: RootfsSpec, *, log: Path | None) -> Board:
    key = board_key(spec)
    final = cache_root() / key
    partial = final.with_name(key + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    (partial / "rootfs").mkdir(parents=True)
    log = log or partial / "build.log"
    started = time.monotonic()
    _step(
        "debootstrap",
        [
            "debootstrap",
            f"--arch={spec.arch}",
            "--variant=minbase",
            f"--include={','.join(spec.packages)}",
            spec.suite,
            str(partial / "rootfs"),
            spec.mirror,
        ],
        log=log,
    )
    debootstrap_s = time.monotonic() - started
    rootfs = partial / "rootfs"
    shutil.copyfile(HOST_CA_BUNDLE, rootfs / BOARD_CA_BUNDLE.lstrip("/"))
    shutil.copyfile("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
    (rootfs / WORK.lstrip("/")).mkdir(exist_ok=True)
    (rootfs / "opt" / "edgefleet").mkdir(parents=True, exist_ok=True)
    (rootfs / "opt" / "edgefleet" / "requirements.txt").write_text(spec.requirements)
    board = Board(path=partial, key=key)
    started_pip = time.monotonic()
    _step(
        "pip install (pinned agent requirements)",
        board.command(
            [
                "python3",
                "-m",
                "pip",
                "install",
                "--break-system-packages",
                "--no-cache-dir",
                *spec.pip_formats(),
                "-r",
                "/opt/edgefleet/requirements.txt",
            ]
        ),
        log=log,
        env=board.env(),
    )
    pip_s = time.monotonic() - started_pip
    uname = board.run(["uname", "-m"]).stdout.strip()
    meta = {
        "key": key,
        "suite": spec.suite,
        "arch": spec.arch,
        "packages": list(spec.packages),
        "requirements": spec.requirements,
        "from_source": list(spec.from_source),
        "uname_m": uname,
        "debootstrap_s": round(debootstrap_s, 1),
        "pip_s": round(pip_s, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (partial / "board.json").write_text(json.dumps(meta, indent=2) + "\n")
    partial.rename(final)
    return Board(path=final, key=key)


def _step(
    name: str, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None
) -> None:
    with log.open("a") as out:
        out.write(f"\n=== {name}: {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=dict(env) if env else None
        )
    if proc.returncode != 0:
        raise BuildError(f"{name} failed (exit {proc.returncode}); see {log}")
