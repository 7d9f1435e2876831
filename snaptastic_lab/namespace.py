"""A private mount namespace, so that lab mounts never reach the host and vanish with the process."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MARKER = "SNAPTASTIC_LAB_PRIVATE_NS"


def _own_namespace() -> str:
    return os.readlink("/proc/self/ns/mnt")


def in_private_namespace() -> bool:
    """Whether this process is in the namespace a lab run made (its children, xdist workers among them, are)."""
    try:
        # The namespace it entered, or its pid when `unshare -m` exec'd it into a new one (python -m snaptastic_lab).
        if os.environ.get(MARKER) in (_own_namespace(), str(os.getpid())):
            return True
        return _own_namespace() != os.readlink("/proc/1/ns/mnt")
    except OSError:
        return False


def enter_private_namespace() -> None:
    """unshare(CLONE_NEWNS) for this process (must be single-threaded), then make every mount private.

    Children inherit the namespace. Python 3.11 has no os.unshare, hence ctypes.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare(CLONE_NEWNS) failed: {os.strerror(errno)}")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True)
    os.environ[MARKER] = _own_namespace()


MNT_DETACH = 2
LOOP_MAJOR = "7"


def own_namespace_argv(argv: list[str], keep: Path | None = None) -> list[str]:
    """`argv` run in a mount namespace of its own, as on a machine of its own.

    A new namespace starts as a copy of this one, with every file system other tests of the run have mounted at
    that moment; each copy would keep its file system alive after those tests unmount it (and their agent then
    waits for it to be let go). The copies are detached before `argv` starts, except those at or under `keep`.
    """
    return ["unshare", "-m", "--propagation", "private", sys.executable, "-m", "snaptastic_lab.namespace",
            str(keep or ""), *argv]


def _detach_loop_mounts(keep: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [fields[4].encode().decode("unicode_escape")
                  for fields in map(str.split, f) if fields[2].split(":")[0] == LOOP_MAJOR]
    kept = keep.rstrip("/")
    for point in reversed(points):  # deepest first
        if kept and (point == kept or point.startswith(kept + "/")):
            continue
        libc.umount2(point.encode(), MNT_DETACH)


if __name__ == "__main__":
    _detach_loop_mounts(sys.argv[1])
    os.execvp(sys.argv[2], sys.argv[2:])
