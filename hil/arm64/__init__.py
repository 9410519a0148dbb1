"""An emulated arm64 (or armhf) board: a Debian root filesystem run under qemu-user-static
(binfmt_misc).

``python -m hil.arm64 [--arch armhf] build|shell|info``. The root filesystem and the agent's pinned
dependencies are cached under ``~/.cache/edgefleet/hil/`` keyed on what goes into them; the
edgefleet wheel itself is installed fresh on every run. Emulated timings are not device timings.
"""

from hil.arm64.rootfs import Board, RootfsSpec, Unavailable, board_key, ensure_board, find_board

__all__ = ["Board", "RootfsSpec", "Unavailable", "board_key", "ensure_board", "find_board"]
