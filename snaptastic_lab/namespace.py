"""A private mount namespace, so that lab mounts never reach the host and vanish with the process."""

from __future__ import annotations

import ctypes
import os
import subprocess

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
