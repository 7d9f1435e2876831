"""Block devices: find the local device of an EBS volume, check it is that volume, probe, format, grow.

Xen instances show `/dev/sdf` as `xvdf` (or `sdf`); Nitro instances show NVMe devices whose serial number is the
volume id without the dash. Every path comes from `Paths`, every program runs through `runner.run`.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from pathlib import Path

from snaptastic_boot import messages
from snaptastic_boot.errors import OperationFailed, UnsafeOperation
from snaptastic_boot.model import Probe
from snaptastic_boot.system.paths import Paths
from snaptastic_boot.system.runner import run

EBS_MODEL = "Amazon Elastic Block Store"
PROBE_BYTES = 1024 * 1024


def nvme_serial_volume_id(serial: str) -> str | None:
    """`vol0123abcd...` (as the NVMe controller reports it) -> `vol-0123abcd...`."""
    s = serial.strip()
    if s.startswith("vol") and not s.startswith("vol-") and len(s) > 3:
        return "vol-" + s[3:]
    return s if s.startswith("vol-") else None


class BlockDevices:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths

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
            if volume_id and (model == EBS_MODEL or model in self.paths.extra_nvme_models):
                out[volume_id] = self.paths.dev_root / entry.name
        return out

    def find(self, volume_id: str, device_name: str) -> Path | None:
        """The local block device of an attached volume, or None if it has not appeared (yet)."""
        nvme = self.nvme_volumes().get(volume_id)
        if nvme is not None:
            return nvme if _is_block(nvme) else None
        base = device_name.removeprefix("/dev/")
        candidates = [base.replace("sd", "xvd", 1), base] if base.startswith("sd") else [base, base.replace("xvd", "sd", 1)]
        for name in candidates:
            path = self.paths.dev_root / name
            if _is_block(path):
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
            raise UnsafeOperation(messages.serial_unreadable(path, volume_id, exc.strerror)) from exc
        if found != volume_id:
            raise UnsafeOperation(messages.wrong_volume(path, found, volume_id))

    @staticmethod
    def major_minor(path: Path) -> str:
        rdev = os.stat(path).st_rdev
        return f"{os.major(rdev)}:{os.minor(rdev)}"

    @staticmethod
    def probe(path: Path) -> Probe:
        """What is on the device. A device that cannot be read is an error, never 'blank'."""
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                head = os.read(fd, PROBE_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OperationFailed(messages.cannot("read", path, exc.strerror)) from exc
        result = run(["blkid", "-p", "-o", "export", str(path)], ok_codes=(0, 2))
        values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        probe = Probe(values.get("TYPE"), values.get("UUID"), values.get("PTTYPE"))
        if probe.blank and head.strip(b"\0"):
            # blkid knows no signature, but the device holds data: treat it as not blank.
            return Probe("unknown-data", None, None)
        return probe

    def mkfs(self, path: Path, fstype: str, volume_id: str) -> None:
        if not self.probe(path).blank:
            raise UnsafeOperation(messages.not_blank(path, volume_id))
        # xfs labels hold at most 12 characters; ext4 labels 16.
        label = ["-L", volume_id.replace("vol-", "")[:12]]
        argv = {"ext4": ["mkfs.ext4", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1"], "xfs": ["mkfs.xfs", "-q"]}[fstype]
        run([*argv, *label, str(path)], timeout=600)

    @staticmethod
    def device_size(path: Path) -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)

    @staticmethod
    def fs_size(path: Path, mount_point: str, fstype: str) -> int | None:
        """The size the mounted filesystem has, in bytes (None when it is not one we know how to read).

        ext4 keeps it in its superblock, which the kernel writes through the device's own cache; a mounted
        xfs answers XFS_IOC_FSGEOMETRY (its on-disk superblock may lag behind its log)."""
        if fstype == "xfs":
            return _xfs_size(mount_point)
        try:
            with open(path, "rb") as f:
                head = f.read(2048)
        except OSError as exc:
            raise OperationFailed(messages.cannot("read", path, exc.strerror)) from exc
        if fstype in ("ext4", "ext3", "ext2") and head[1024 + 0x38:1024 + 0x3A] == b"\x53\xef":
            sb = head[1024:]
            blocks = struct.unpack_from("<I", sb, 4)[0]
            if struct.unpack_from("<I", sb, 0x60)[0] & 0x80:  # 64bit: the high half of the block count
                blocks |= struct.unpack_from("<I", sb, 0x150)[0] << 32
            return int(blocks * (1024 << struct.unpack_from("<I", sb, 24)[0]))
        return None

    @staticmethod
    def grow(path: Path, mount_point: str, fstype: str) -> None:
        if fstype == "ext4":
            run(["resize2fs", str(path)], timeout=1800)
        elif fstype == "xfs":
            run(["xfs_growfs", mount_point], timeout=1800)


def _is_block(path: Path) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


XFS_IOC_FSGEOMETRY_V1 = 0x80705864  # _IOR('X', 100, struct xfs_fsop_geom_v1), 112 bytes


def _xfs_size(mount_point: str) -> int | None:
    try:
        fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OperationFailed(messages.cannot("read", mount_point, exc.strerror)) from exc
    try:
        geometry = bytearray(112)
        fcntl.ioctl(fd, XFS_IOC_FSGEOMETRY_V1, geometry)
    except OSError:
        return None
    finally:
        os.close(fd)
    block_size, data_blocks = struct.unpack_from("<I", geometry, 0)[0], struct.unpack_from("<Q", geometry, 32)[0]
    return int(block_size * data_blocks)
