"""fstab: render our entries, merge them into the file, write it atomically.

The file is handled as bytes and lines end only at `\\n`, so every byte the agent does not own is written back as
it was: comments in Latin-1, form feeds, CRLF line ends. Each entry the agent owns sits right below a marker
comment naming its mount point; the agent only ever removes its own marker + entry pairs (a marker whose entry is
gone goes alone). Entries use `UUID=`, `nofail` and a systemd device timeout so that a volume that is gone never
blocks boot. A symlinked fstab is followed: its target is what gets replaced.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from snaptastic_boot import messages
from snaptastic_boot.errors import OperationFailed

log = logging.getLogger("snaptastic.fstab")

MARKER = "# snaptastic-boot: managed entry for "
DEVICE_TIMEOUT = "x-systemd.device-timeout=30s"
_MARKER = MARKER.encode()
_OCTAL = re.compile(rb"\\([0-7]{3})")


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
        return f"UUID={self.uuid} {_escape(self.mount_point)} {self.fstype} {','.join(opts)} 0 0"


def render(entry: Entry, end: bytes = b"\n") -> list[bytes]:
    return [_MARKER + entry.mount_point.encode() + end, entry.line().encode() + end]


def mount_point_of(field: bytes) -> str:
    """A mount point as fstab writes it (`\\040` for a space, any `\\NNN` octal), decoded and normalised."""
    raw = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), field).decode("utf-8", "surrogateescape")
    return posixpath.normpath(raw) if raw.startswith("/") else raw


def _escape(mount_point: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in mount_point)


def _lines(data: bytes) -> list[bytes]:
    """The lines with their ends; only `\\n` ends a line (a last line without one is kept as it is)."""
    parts = data.split(b"\n")
    out = [p + b"\n" for p in parts[:-1]]
    return [*out, parts[-1]] if parts[-1] else out


def _content(line: bytes) -> bytes:
    return line.rstrip(b"\n").removesuffix(b"\r")


def _marked(line: bytes) -> str | None:
    """The mount point our marker line names, or None when the line is not our marker."""
    content = _content(line)
    return content[len(_MARKER):].strip().decode("utf-8", "replace") if content.startswith(_MARKER) else None


def _entry_mount_point(line: bytes) -> str | None:
    fields = _content(line).split()
    if len(fields) < 2 or fields[0].startswith(b"#"):
        return None
    return mount_point_of(fields[1])


def _ours(lines: list[bytes]) -> set[int]:
    """Indexes of the lines the agent owns: each marker, and the entry right below it for the same mount point."""
    owned: set[int] = set()
    for i, line in enumerate(lines):
        mp = _marked(line)
        if mp is None:
            continue
        owned.add(i)
        if i + 1 < len(lines) and _entry_mount_point(lines[i + 1]) == mp:
            owned.add(i + 1)
    return owned


def managed_mount_points(data: bytes) -> list[str]:
    return [mp for mp in (_marked(line) for line in _lines(data)) if mp is not None]


def foreign_entry_for(data: bytes, mount_point: str) -> str | None:
    """A line not written by us that mounts something at this mount point (compared decoded and normalised)."""
    lines = _lines(data)
    owned = _ours(lines)
    want = posixpath.normpath(mount_point)
    for i, line in enumerate(lines):
        if i not in owned and _entry_mount_point(line) == want:
            return _content(line).decode("utf-8", "replace")
    return None


def merge(data: bytes, add: Iterable[Entry] = (), remove: Iterable[str] = ()) -> bytes:
    """New file content: our pairs for `remove` and for the mount points of `add` dropped, `add` appended, every
    other byte kept. Our lines take the line end of the file's last line (CRLF in a CRLF file)."""
    added = list(add)
    drop = set(remove) | {e.mount_point for e in added}
    lines = _lines(data)
    owned = _ours(lines)
    out: list[bytes] = []
    skip = -1
    for i, line in enumerate(lines):
        if i == skip:
            continue
        mp = _marked(line)
        if mp is not None and mp in drop:
            if i + 1 in owned and _marked(lines[i + 1]) is None:
                skip = i + 1  # its entry goes with it; a marker whose entry is missing goes alone
            continue
        out.append(line)
    end = b"\r\n" if lines and lines[-1].endswith(b"\r\n") else b"\n"
    if added and out and not out[-1].endswith(b"\n"):
        out[-1] += end  # the last line had no end: ours start on a line of their own
    for entry in added:
        out += render(entry, end)
    return b"".join(out)


def diff(old: bytes, new: bytes) -> list[str]:
    old_lines, new_lines = _lines(old), _lines(new)
    show = [(f"-{_content(x).decode('utf-8', 'replace')}") for x in old_lines if x not in new_lines]
    return show + [f"+{_content(x).decode('utf-8', 'replace')}" for x in new_lines if x not in old_lines]


def check(path: Path) -> None:
    """Stop before anything changes when the file cannot be kept byte for byte: not a regular file (after
    following links), unreadable, or holding a NUL byte (no fstab does; it is not a text file)."""
    target = Path(os.path.realpath(path))
    try:
        st = target.stat()
    except FileNotFoundError:
        return  # none yet: it is made with our entries
    except OSError as exc:
        raise OperationFailed(messages.fstab_unusable(path, exc.strerror or str(exc))) from exc
    if not stat.S_ISREG(st.st_mode):
        raise OperationFailed(messages.fstab_unusable(path, f"{target} is not a regular file"))
    if b"\0" in read(path):
        raise OperationFailed(messages.fstab_unusable(path, "it holds a NUL byte, so it is not a text file"))


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise OperationFailed(messages.fstab_unusable(path, exc.strerror or str(exc))) from exc


def write_atomic(path: Path, new: bytes) -> bool:
    """Replace the file only if its content changes; keep mode, owner and a backup. Returns whether it wrote.

    A symlink is followed: its target is replaced, the link stays. The new content goes to a temporary file
    in the target's directory, is fsynced, then renamed over the old one, so a full disk, a read-only /etc or a
    crash leaves the old file intact.
    """
    old = read(path)
    if old == new:
        return False
    target = Path(os.path.realpath(path))
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        if target.exists():
            st = target.stat()
            os.chown(tmp_name, st.st_uid, st.st_gid)
            os.chmod(tmp_name, st.st_mode & 0o7777)
            shutil.copy2(target, target.with_name(target.name + ".snaptastic.bak"))
        else:
            os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
        tmp_name = None
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise OperationFailed(messages.fstab_unwritable(path, exc.strerror)) from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    for line in diff(old, new):
        log.info("fstab %s", line)
    return True
