"""Whether this host runs another architecture's programs: qemu-user-static's binfmt_misc entry.

One check for the emulated boards (``hil/arm64``: a chroot) and the emulated container images
(``containers/emulation.py``). Both need the entry registered with flag F ("fix binary": the
host's qemu binary is opened at registration and used inside a chroot or container that holds
no qemu of its own). Host tooling, not device code.
"""

from __future__ import annotations

from pathlib import Path

#: Debian architecture → qemu-user-static's binfmt_misc entry.
ENTRIES: dict[str, str] = {"arm64": "qemu-aarch64", "armhf": "qemu-arm"}
DIR = Path("/proc/sys/fs/binfmt_misc")


def problem(arch: str, *, what: str) -> str | None:
    """Why this host cannot run ``arch`` programs (for ``what``: the board, images), or None."""
    name = ENTRIES[arch]
    path = DIR / name
    if not path.exists():
        return (
            f"no {name} binfmt_misc entry to run {what}: apt-get install -y qemu-user-static "
            "binfmt-support, then `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc` "
            f"if it is not mounted and `update-binfmts --enable {name}`"
        )
    entry = path.read_text()
    if not entry.startswith("enabled"):
        return f"the {name} binfmt_misc entry is disabled: update-binfmts --enable {name}"
    flags = next(
        (line.split(":", 1)[1] for line in entry.splitlines() if line.startswith("flags:")), ""
    )
    if "F" not in flags:
        return f"the {name} binfmt_misc entry lacks flag F (fix-binary): {what} cannot use it"
    return None
