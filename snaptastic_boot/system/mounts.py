"""The mount table and mounting: read /proc/self/mountinfo, mount, unmount."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

from snaptastic_boot import messages
from snaptastic_boot.errors import OperationFailed
from snaptastic_boot.model import Mount
from snaptastic_boot.system import fsfreeze
from snaptastic_boot.system.runner import run

# How long a copy of an unmounted file system may stay mounted in another mount namespace (a container or a
# service starting at that moment takes one and usually lets it go at once) before unmounting fails.
RELEASE_WAIT = 10.0


def mounts() -> list[Mount]:
    out: list[Mount] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            if len(fields) < 6 or len(rfields) < 2:
                continue
            mount_point = fields[4].encode().decode("unicode_escape") if "\\" in fields[4] else fields[4]
            out.append(Mount(mount_point, rfields[1], rfields[0], fields[2], fields[5]))
    return out


def mount_at(mount_point: str) -> Mount | None:
    found = [m for m in mounts() if m.mount_point == mount_point]
    return found[-1] if found else None


def mount(path: Path, mount_point: str, fstype: str, options: str) -> None:
    Path(mount_point).mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", fstype, "-o", options, str(path), mount_point], timeout=600)


def umount(mount_point: str) -> None:
    """Unmount, and return only once the file system is shut down, so that a snapshot of its device taken next
    holds every byte and detaching the device pulls it from under nobody.

    A copy of the mount in another mount namespace (a container, `unshare -m`, a service with private mounts)
    keeps the file system alive after this umount: its dirty data would be missing from the device. Hence the
    flush first, and the wait for the device to be free after.
    """
    mounted = mount_at(mount_point)
    fsfreeze.flush(mount_point)
    run(["umount", mount_point], timeout=300)
    if mounted is not None:
        wait_released(mount_point, Path(mounted.source))


def wait_released(mount_point: str, device: Path) -> None:
    """Return once no mount namespace mounts the device (it is free to snapshot whole and to detach); fail
    naming a process that still has it mounted after RELEASE_WAIT."""
    deadline = time.monotonic() + RELEASE_WAIT
    while _held(str(device)):
        if time.monotonic() > deadline:
            rdev = os.stat(device).st_rdev
            holder = _holder(f"{os.major(rdev)}:{os.minor(rdev)}")
            raise OperationFailed(messages.mounted_elsewhere(mount_point, str(device), holder))
        time.sleep(0.1)


def _held(device: str) -> bool:
    """Whether a block device is still mounted (anywhere) or opened exclusively: O_EXCL then fails with EBUSY."""
    try:
        if not stat.S_ISBLK(os.stat(device).st_mode):
            return False
        fd = os.open(device, os.O_RDONLY | os.O_EXCL)
    except OSError as exc:
        return exc.errno == errno.EBUSY
    os.close(fd)
    return False


def _holder(major_minor: str) -> str:
    """A process whose mount namespace still mounts the device, for the message ("process 1234 (dockerd)")."""
    seen: set[str] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            namespace = os.readlink(f"/proc/{pid}/ns/mnt")
            if namespace in seen:
                continue
            seen.add(namespace)
            with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as f:
                if any(line.split()[2] == major_minor for line in f):
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    return f"process {pid} ({comm})"
        except (OSError, IndexError):
            continue
    return "another process"


def entries(directory: str) -> list[str]:
    """Names in a directory (empty when it does not exist yet)."""
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def xfs_uuid_in_use(uuid: str) -> bool:
    """Whether a mounted xfs has this UUID (a restored copy next to its origin then needs `nouuid`)."""
    for m in mounts():
        if m.fstype == "xfs" and m.source.startswith("/"):
            try:
                result = run(["blkid", "-p", "-s", "UUID", "-o", "value", m.source], ok_codes=(0, 2))
            except OperationFailed:
                continue
            if result.stdout.strip() == uuid:
                return True
    return False
