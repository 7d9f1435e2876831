"""The mount table and mounting: read /proc/self/mountinfo, mount, unmount."""

from __future__ import annotations

import os
from pathlib import Path

from snaptastic_boot.errors import OperationFailed
from snaptastic_boot.model import Mount
from snaptastic_boot.system.runner import run


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
    run(["umount", mount_point], timeout=300)


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
