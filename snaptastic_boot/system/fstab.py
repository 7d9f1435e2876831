"""fstab: render our entries, merge them into the file, write it atomically.

Each entry the agent owns sits right below a marker comment naming its mount point, so the agent only ever
edits its own lines; every other line is kept byte for byte. Entries use `UUID=`, `nofail` and a systemd device
timeout so that a volume that is gone never blocks boot.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from snaptastic_boot.errors import OperationFailed

log = logging.getLogger("snaptastic.fstab")

MARKER = "# snaptastic-boot: managed entry for "
DEVICE_TIMEOUT = "x-systemd.device-timeout=30s"


@dataclass(frozen=True)
class Entry:
    uuid: str
    mount_point: str
    fstype: str
    options: str

    def line(self) -> str:
        opts = [o for o in self.options.split(",") if o and o not in ("nofail",) and not o.startswith("x-systemd.device-timeout")]
        opts += ["nofail", DEVICE_TIMEOUT]
        # pass 0: the agent checks and mounts these itself; a boot-time fsck of a volume still loading
        # its blocks from a snapshot would stall the boot.
        return f"UUID={self.uuid} {self.mount_point} {self.fstype} {','.join(opts)} 0 0"


def render(entry: Entry) -> list[str]:
    return [MARKER + entry.mount_point, entry.line()]


def managed_mount_points(text: str) -> list[str]:
    return [line[len(MARKER):].strip() for line in text.splitlines() if line.startswith(MARKER)]


def foreign_entry_for(text: str, mount_point: str) -> str | None:
    """A line not written by us that mounts something at this mount point."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        fields = line.split()
        if len(fields) >= 2 and not line.lstrip().startswith("#") and fields[1] == mount_point:
            if not (i > 0 and lines[i - 1].startswith(MARKER)):
                return line
    return None


def merge(text: str, add: Iterable[Entry] = (), remove: Iterable[str] = ()) -> str:
    """New file content: our entries for `remove` and for the mount points of `add` replaced, the rest kept."""
    added = list(add)
    drop = set(remove) | {e.mount_point for e in added}
    out: list[str] = []
    skip_next = False
    for line in text.splitlines():
        if skip_next:
            skip_next = False
            continue
        if line.startswith(MARKER) and line[len(MARKER):].strip() in drop:
            skip_next = True
            continue
        out.append(line)
    for entry in added:
        out += render(entry)
    return "\n".join(out) + "\n" if out else ""


def diff(old: str, new: str) -> list[str]:
    old_lines, new_lines = old.splitlines(), new.splitlines()
    return [f"-{x}" for x in old_lines if x not in new_lines] + [f"+{x}" for x in new_lines if x not in old_lines]


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise OperationFailed(f"cannot read {path}: {exc.strerror}") from exc


def write_atomic(path: Path, new: str) -> bool:
    """Replace the file only if its content changes; keep mode, owner and a backup. Returns whether it wrote.

    The new content goes to a temporary file in the same directory, is fsynced, then renamed over the old
    one, so a full disk, a read-only /etc or a crash leaves the old file intact.
    """
    old = read(path)
    if old == new:
        return False
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            st = path.stat()
            os.chown(tmp_name, st.st_uid, st.st_gid)
            os.chmod(tmp_name, st.st_mode & 0o7777)
            shutil.copy2(path, path.with_name(path.name + ".snaptastic.bak"))
        else:
            os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
        tmp_name = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise OperationFailed(f"cannot write {path}: {exc.strerror}; the old file is unchanged") from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    for line in diff(old, new):
        log.info("fstab %s", line)
    return True
