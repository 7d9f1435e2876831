"""Block devices for lab volumes: sparse files, loop devices, and device nodes where EC2 would put them.

A volume's data lives in `volumes/vol-xxx.img`; attaching binds it to a loop device and creates a block
special file with the loop's major/minor under the lab's dev root, named as the instance would see the
volume: `xvdf` for a requested `/dev/sdf` on Xen instances, `nvme<K>n1` on Nitro, with the volume id in the NVMe serial in sysfs.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3
NVME_MODEL = "Amazon Elastic Block Store"
DEVICE_STYLES = ("xen", "nvme")


def run(argv: list[str], timeout: float = 60) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def make_sparse(path: Path, size_gib: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        if handle.tell() < size_gib * GIB:
            handle.truncate(size_gib * GIB)


FICLONE = 0x40049409  # _IOW(0x94, 9, int)


def copy_sparse(source: Path, target: Path) -> None:
    """Copy an image as EBS does a snapshot: a copy-on-write clone where the image store supports it (the
    lab's xfs store does, see `ImageStore`), else only the data regions (SEEK_DATA/SEEK_HOLE) with
    copy_file_range. Either way in this process, so that the lab answers CreateSnapshots of 16 volumes in
    about one round trip, as EC2 does."""
    target.parent.mkdir(parents=True, exist_ok=True)
    size = source.stat().st_size
    with open(source, "rb") as src, open(target, "wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return
        except OSError:
            pass  # no reflinks here (or across file systems): copy the data
        dst.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            position = start
            while position < end:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), end - position, position, position)
                if copied == 0:
                    break
                position += copied
            offset = end


def loops_for(path: Path) -> list[str]:
    """Loop devices bound to `path`, from `losetup -j`."""
    out = run(["losetup", "-j", str(path)])
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


def loop_attach(path: Path, attempts: int = 5) -> str:
    """Bind `path` to a free loop device and return its name.

    --find creates /dev/loopN through /dev/loop-control when every existing one is busy. Another process can
    take the device losetup picked before it binds it (other labs, other test runs); then try again.
    """
    for attempt in range(attempts):
        try:
            return run(["losetup", "--find", "--show", str(path)]).strip()
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def loop_detach(loop: str) -> None:
    # On a loop that is still mounted this only sets autoclear; the kernel frees it at the last close.
    subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)


def mounts_of(rdev: int) -> list[str]:
    """Mount points whose source is the block device `rdev` (major:minor), from /proc/self/mountinfo."""
    wanted = f"{os.major(rdev)}:{os.minor(rdev)}"
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if fields[2] == wanted:
                found.append(_unescape(fields[4]))
    return found


class ImageStore:
    """An xfs file system with reflinks, on a sparse file, that holds the volume and snapshot images: a
    snapshot is then a clone that shares blocks with its volume until either changes, much as EBS snapshots
    share blocks. Without mkfs.xfs (or if mounting fails) the images stay in plain directories and are copied.

    The sparse file lives in memory (/dev/shm) where there is room: a volume's cache flush (every fsync, every
    freeze, each journal commit) then costs what EBS's does, well under a millisecond, instead of a flush of
    this machine's disk, tens of ms, that would swamp what the freeze measurements are about. Only what is
    written takes room (the store's own log about 64 MB)."""

    SIZE = 64 << 30
    MEMORY = Path("/dev/shm")
    MEMORY_FREE = 4 << 30  # used only while this much of it is free

    def __init__(self, root: Path) -> None:
        self.root = root
        self.image = self._place(root)
        self.mounted = False

    @classmethod
    def _place(cls, root: Path) -> Path:
        try:
            memory = os.statvfs(cls.MEMORY)
        except OSError:
            return root.with_suffix(".img")
        if memory.f_bavail * memory.f_frsize < cls.MEMORY_FREE:
            return root.with_suffix(".img")
        for stale in cls.MEMORY.glob("snaptastic-lab-*.img"):
            owner = stale.name.split("-")[2]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                stale.unlink(missing_ok=True)  # left by a lab whose process was killed
        return cls.MEMORY / f"snaptastic-lab-{os.getpid()}-{uuid.uuid4().hex[:12]}.img"

    def open(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        if shutil.which("mkfs.xfs") is not None:
            with open(self.image, "wb") as f:
                f.truncate(self.SIZE)
            made = subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(self.image)], capture_output=True, check=False)
            mounted = made.returncode == 0 and subprocess.run(
                ["mount", "-o", "loop", str(self.image), str(self.root)], capture_output=True, check=False
            ).returncode == 0
            self.mounted = mounted
            if not mounted:
                self.image.unlink(missing_ok=True)
        return self.root

    def close(self) -> None:
        if self.mounted:
            if subprocess.run(["umount", str(self.root)], capture_output=True, check=False).returncode != 0:
                lazy_unmount(str(self.root))
            self.mounted = False
        self.image.unlink(missing_ok=True)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = _unescape(line.split()[4])
            if point == str(root) or point.startswith(prefix):
                found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def lazy_unmount(point: str) -> None:
    subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def xen_name(requested: str) -> str:
    """`/dev/sdf` -> `xvdf`, `/dev/xvdg` -> `xvdg`: what a Xen instance's kernel calls the device."""
    name = requested.removeprefix("/dev/")
    if name.startswith("sd"):
        name = "xv" + name[1:]
    return name


def nvme_serial(volume_id: str) -> str:
    return volume_id.replace("-", "").ljust(20)


@dataclass
class Attached:
    """One attached volume as the instance sees it."""

    volume_id: str
    loop: str
    rdev: int
    name: str
    node: Path
    sys_dir: Path


class DeviceTable:
    """The instance's block devices under the lab's dev and sys roots."""

    def __init__(self, dev_root: Path, sys_root: Path, style: str) -> None:
        if style not in DEVICE_STYLES:
            raise ValueError(f"device_style must be one of {DEVICE_STYLES}, not {style!r}")
        self.dev_root = dev_root
        self.sys_root = sys_root
        self.style = style
        self.attached: dict[str, Attached] = {}
        self.loops_created: set[str] = set()

    def add_root(self, volume_id: str) -> None:
        """The root disk: sysfs only, no node; it is not a lab volume and nothing may mount it."""
        if self.style == "nvme":
            self._nvme_sysfs(self.sys_root / "block" / "nvme0n1", volume_id)
        else:
            (self.sys_root / "block" / "xvda").mkdir(parents=True, exist_ok=True)

    def remove_root(self) -> None:
        for name in ("nvme0n1", "xvda"):
            shutil.rmtree(self.sys_root / "block" / name, ignore_errors=True)

    def _next_name(self, requested: str) -> str:
        if self.style == "xen":
            return xen_name(requested)
        taken = {a.name for a in self.attached.values()}
        number = 1
        while f"nvme{number}n1" in taken or (self.dev_root / f"nvme{number}n1").exists():
            number += 1
        return f"nvme{number}n1"

    def _nvme_sysfs(self, sys_dir: Path, volume_id: str) -> None:
        device = sys_dir / "device"
        device.mkdir(parents=True, exist_ok=True)
        (device / "serial").write_text(nvme_serial(volume_id) + "\n")
        (device / "model").write_text(NVME_MODEL.ljust(40) + "\n")

    def attach(self, volume_id: str, image: Path, requested: str) -> Attached:
        loop = loop_attach(image)
        self.loops_created.add(loop)
        rdev = os.stat(loop).st_rdev
        name = self._next_name(requested)
        node = self.dev_root / name
        sys_dir = self.sys_root / "block" / name
        self.dev_root.mkdir(parents=True, exist_ok=True)
        if node.exists() or node.is_symlink():
            node.unlink()
        os.mknod(node, 0o660 | stat.S_IFBLK, rdev)
        os.chmod(node, 0o660)  # mknod's mode passes through the umask
        if self.style == "nvme":
            self._nvme_sysfs(sys_dir, volume_id)
        else:
            sys_dir.mkdir(parents=True, exist_ok=True)
        entry = Attached(volume_id, loop, rdev, name, node, sys_dir)
        self.attached[volume_id] = entry
        return entry

    def is_mounted(self, volume_id: str) -> bool:
        entry = self.attached.get(volume_id)
        return entry is not None and bool(mounts_of(entry.rdev))

    def detach(self, volume_id: str, force_unmount: bool = False) -> None:
        entry = self.attached.pop(volume_id, None)
        if entry is None:
            return
        if force_unmount:
            for point in mounts_of(entry.rdev):
                lazy_unmount(point)
        entry.node.unlink(missing_ok=True)
        shutil.rmtree(entry.sys_dir, ignore_errors=True)
        loop_detach(entry.loop)

    def detach_all(self, force_unmount: bool = True) -> None:
        for volume_id in list(self.attached):
            self.detach(volume_id, force_unmount=force_unmount)
        self.remove_root()

    def device_for(self, volume_id: str) -> Path | None:
        entry = self.attached.get(volume_id)
        return entry.node if entry else None
