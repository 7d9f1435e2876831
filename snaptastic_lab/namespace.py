"""A private mount namespace, so that lab mounts never reach the host and vanish with the process."""

from __future__ import annotations

import ctypes
import os
import subprocess

CLONE_NEWNS = 0x00020000
MARKER = "SNAPTASTIC_LAB_PRIVATE_NS"


def in_private_namespace() -> bool:
    if os.environ.get(MARKER) == str(os.getpid()):
        return True
    try:
        return os.readlink("/proc/self/ns/mnt") != os.readlink("/proc/1/ns/mnt")
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
    os.environ[MARKER] = str(os.getpid())
