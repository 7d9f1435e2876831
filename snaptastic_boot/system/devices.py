"""Block devices and mounts: find the local device of an EBS volume, probe, format, mount, freeze.

Xen instances show `/dev/sdf` as `xvdf` (or `sdf`); Nitro instances show NVMe devices whose serial number is the
volume id without the dash. Every path comes from `Paths`, every program runs through `runner.run`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from snaptastic_boot.errors import OperationFailed, UnsafeOperation
from snaptastic_boot.system.paths import Paths
from snaptastic_boot.system.runner import run

log = logging.getLogger("snaptastic.devices")

EBS_MODEL = "Amazon Elastic Block Store"
PROBE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Probe:
    fstype: str | None
    uuid: str | None
    pttype: str | None

    @property
    def blank(self) -> bool:
        return not self.fstype and not self.pttype


@dataclass(frozen=True)
class Mount:
    mount_point: str
    source: str
    fstype: str
    major_minor: str
    options: str


def nvme_serial_volume_id(serial: str) -> str | None:
    """`vol0123abcd...` (as the NVMe controller reports it) -> `vol-0123abcd...`."""
    s = serial.strip()
    if s.startswith("vol") and not s.startswith("vol-") and len(s) > 3:
        return "vol-" + s[3:]
    return s if s.startswith("vol-") else None


class Devices:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    # -- finding devices -----------------------------------------------------------------------------------

    def nvme_volumes(self) -> dict[str, Path]:
        """volume id -> device path, for every EBS NVMe device the system shows."""
        out: dict[str, Path] = {}
        block = self.paths.sys_root / "block"
        if not block.is_dir():
            return out
        for entry in sorted(block.iterdir()):
            if not entry.name.startswith("nvme"):
                continue
            try:
                model = (entry / "device" / "model").read_text().strip()
                serial = (entry / "device" / "serial").read_text()
            except OSError:
                continue
            volume_id = nvme_serial_volume_id(serial)
            if model == EBS_MODEL and volume_id:
                out[volume_id] = self.paths.dev_root / entry.name
        return out

    def find(self, volume_id: str, device_name: str) -> Path | None:
        """The local block device of an attached volume, or None if it has not appeared (yet)."""
        nvme = self.nvme_volumes().get(volume_id)
        if nvme is not None:
            return nvme if self._is_block(nvme) else None
        base = device_name.removeprefix("/dev/")
        candidates = [base.replace("sd", "xvd", 1), base] if base.startswith("sd") else [base, base.replace("xvd", "sd", 1)]
        for name in candidates:
            path = self.paths.dev_root / name
            if self._is_block(path):
                return path
        return None

    def verify_identity(self, path: Path, volume_id: str) -> None:
        """Refuse to touch a device that is not the volume we think it is (by-id links can be stale)."""
        if not path.name.startswith("nvme"):
            return  # Xen devices carry no serial; the device name is all EC2 gives.
        serial_file = self.paths.sys_root / "block" / path.name / "device" / "serial"
        try:
            found = nvme_serial_volume_id(serial_file.read_text())
        except OSError as exc:
            raise UnsafeOperation(f"cannot read the serial of {path} to check it is {volume_id}: {exc.strerror}") from exc
        if found != volume_id:
            raise UnsafeOperation(f"{path} is volume {found}, not {volume_id}; refusing to touch it")

    @staticmethod
    def _is_block(path: Path) -> bool:
        try:
            return stat.S_ISBLK(os.stat(path).st_mode)
        except OSError:
            return False

    @staticmethod
    def major_minor(path: Path) -> str:
        rdev = os.stat(path).st_rdev
        return f"{os.major(rdev)}:{os.minor(rdev)}"

    # -- probing and formatting ----------------------------------------------------------------------------

    def probe(self, path: Path) -> Probe:
        """What is on the device. A device that cannot be read is an error, never 'blank'."""
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                head = os.read(fd, PROBE_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OperationFailed(f"cannot read {path}: {exc.strerror}") from exc
        result = run(["blkid", "-p", "-o", "export", str(path)], ok_codes=(0, 2))
        values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        probe = Probe(values.get("TYPE"), values.get("UUID"), values.get("PTTYPE"))
        if probe.blank and head.strip(b"\0"):
            # blkid knows no signature, but the device holds data: treat it as not blank.
            return Probe("unknown-data", None, None)
        return probe

    def mkfs(self, path: Path, fstype: str, volume_id: str) -> None:
        if not self.probe(path).blank:
            raise UnsafeOperation(f"{path} ({volume_id}) is not blank; refusing to format it")
        # xfs labels hold at most 12 characters; ext4 labels 16.
        label = ["-L", volume_id.replace("vol-", "")[:12]]
        argv = {"ext4": ["mkfs.ext4", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1"], "xfs": ["mkfs.xfs", "-q"]}[fstype]
        run([*argv, *label, str(path)], timeout=600)

    def uuid(self, path: Path) -> str:
        uuid = self.probe(path).uuid
        if not uuid:
            raise OperationFailed(f"{path} has no filesystem UUID")
        return uuid

    # -- mounts --------------------------------------------------------------------------------------------

    @staticmethod
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

    def mount_at(self, mount_point: str) -> Mount | None:
        found = [m for m in self.mounts() if m.mount_point == mount_point]
        return found[-1] if found else None

    def mounted_from(self, path: Path) -> list[Mount]:
        mm = self.major_minor(path)
        return [m for m in self.mounts() if m.major_minor == mm]

    def mount(self, path: Path, mount_point: str, fstype: str, options: str) -> None:
        Path(mount_point).mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", fstype, "-o", options, str(path), mount_point], timeout=600)

    @staticmethod
    def entries(directory: str) -> list[str]:
        """Names in a directory (empty when it does not exist yet)."""
        try:
            return sorted(os.listdir(directory))
        except FileNotFoundError:
            return []

    def umount(self, mount_point: str) -> None:
        run(["umount", mount_point], timeout=300)

    def xfs_uuid_in_use(self, uuid: str) -> bool:
        """Whether a mounted xfs has this UUID (a restored copy next to its origin then needs `nouuid`)."""
        for m in self.mounts():
            if m.fstype == "xfs" and m.source.startswith("/"):
                try:
                    result = run(["blkid", "-p", "-s", "UUID", "-o", "value", m.source], ok_codes=(0, 2))
                except OperationFailed:
                    continue
                if result.stdout.strip() == uuid:
                    return True
        return False

    def grow(self, path: Path, mount_point: str, fstype: str) -> None:
        if fstype == "ext4":
            run(["resize2fs", str(path)], timeout=1800)
        elif fstype == "xfs":
            run(["xfs_growfs", mount_point], timeout=1800)

    # -- freezing ------------------------------------------------------------------------------------------
    # The FIFREEZE/FITHAW ioctls are what fsfreeze(8) calls; issued from here they take microseconds instead of
    # a process start each, which keeps the freeze window one API round trip wide for any number of volumes.

    @staticmethod
    def flush(mount_point: str) -> None:
        """Write dirty data out before freezing, so that the freeze itself has little left to do (syncfs(2))."""
        try:
            fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise OperationFailed(f"cannot flush {mount_point}: {exc.strerror}") from exc
        try:
            if _libc().syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OperationFailed(f"cannot flush {mount_point}: {os.strerror(err)}")
        finally:
            os.close(fd)

    @staticmethod
    def freeze(mount_point: str) -> None:
        _ioctl(mount_point, FIFREEZE, "freeze")

    @staticmethod
    def thaw(mount_point: str) -> None:
        try:
            _ioctl(mount_point, FITHAW, "thaw")
        except _NotFrozen:
            pass  # thawing twice is fine


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)


class _NotFrozen(Exception):
    pass


def _ioctl(mount_point: str, request: int, what: str) -> None:
    try:
        fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OperationFailed(f"cannot {what} {mount_point}: {exc.strerror}") from exc
    try:
        fcntl.ioctl(fd, request, 0)
    except OSError as exc:
        if request == FITHAW and exc.errno == errno.EINVAL:
            raise _NotFrozen() from exc
        raise OperationFailed(f"cannot {what} {mount_point}: {exc.strerror}") from exc
    finally:
        os.close(fd)
