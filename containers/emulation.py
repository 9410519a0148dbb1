"""Running an image of another architecture here (arm64 on an x86 host) under qemu-user-static.

qemu-user-static registers itself in binfmt_misc with flag F (the host's qemu binary is opened
once and used inside any container, which holds no qemu of its own); builds and runs then work
as on the image's own CPU, slowly, with two differences that matter to us:

- **The CPU the program sees is the host's.** Debian bookworm's qemu (7.2) passes the host's
  ``/proc/cpuinfo`` (an Intel one, with no ARM ``CPU part`` lines) and the container's
  ``/sys/devices/system/cpu`` (the x86 cache and cluster topology) through to the arm64 program.
  onnxruntime initialises PyTorch's cpuinfo when it is imported; cpuinfo's ARM Linux code
  combines the two, reads ``cpu1/cache/index2/shared_cpu_list`` and dereferences NULL
  (SIGSEGV, ``si_addr=NULL``). Masking ``/sys/devices/system/cpu`` makes cpuinfo fail its
  initialisation cleanly; onnxruntime then warns ("May cause CPU EP performance degradation")
  and runs, as on the emulated board of ``hil/arm64``, which mounts no /sys at all.
- **A crashed PID 1 never exits.** qemu turns the guest's fatal signal into
  ``kill(getpid(), SIGSEGV)`` with the default action, then waits in ``sigsuspend``. The kernel
  drops a default-action signal sent to a PID namespace's init, and in a container without an
  init the program is PID 1: the container hangs in ``rt_sigsuspend`` forever instead of
  exiting 139. ``--init`` (catatonit as PID 1) turns the crash back into an exit.

On real arm64 hardware neither applies (the kernel shows the real CPU; a real fault kills even
a namespace's init): the options below are for emulation only, and masking the CPU topology
there would only cost onnxruntime its CPU feature detection.
"""

from __future__ import annotations

import platform

from edgefleet import binfmt

#: Debian architecture → the CPU name of ``uname -m`` and of qemu's binfmt_misc entry.
CPUS: dict[str, str] = {"amd64": "x86_64", "arm64": "aarch64"}
#: ``podman run`` options for a container emulated by qemu-user (see the module docstring).
EMULATED_RUN_OPTIONS: tuple[str, ...] = (
    "--init",
    "--security-opt",
    "mask=/sys/devices/system/cpu",
)


def host_arch() -> str:
    return {cpu: arch for arch, cpu in CPUS.items()}.get(platform.machine(), platform.machine())


def emulated(arch: str) -> bool:
    return arch != host_arch()


def run_options(arch: str) -> list[str]:
    """What ``podman run`` needs for an ``arch`` container on this host (nothing when native);
    ``--arch`` too, or podman warns that the image's platform is not the host's."""
    return ["--arch", arch, *EMULATED_RUN_OPTIONS] if emulated(arch) else []


def emulation_problem(arch: str) -> str | None:
    """Why this host cannot build or run ``arch`` images, or None when it can (its own arch,
    or qemu-user-static registered with flag F)."""
    if not emulated(arch):
        return None
    return binfmt.problem(arch, what=f"{arch} images (docs/containers.md)")
