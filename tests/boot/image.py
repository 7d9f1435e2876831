"""The images the boot tests run the package in: Debian 12 with systemd, plus the built .deb.

Layers, each built once and kept in a cache outside the repository (SNAPTASTIC_BOOT_CACHE, by default
/var/cache/snaptastic-boot-tests), named by a hash of what goes into it, for two flavours (a container's root
and a virtual machine's, which adds a kernel, udev and the qemu guest agent):

- `base-<hash of the flavour's package list and the recipe>/root`: what `mmdebstrap` makes (about 35-55 s,
  390-540 MB); rebuilt only when the list below or the recipe changes.
- `pkg-<base hash>-<hash of the .deb's files>/upper`: the package installed with `dpkg -i` on an overlay of
  the base (under a second); rebuilt whenever the package's content changes, i.e. for most commits.
- `vm-<base hash>-<hash of the .deb's files>/`: the VM flavour's two layers as one raw ext4 disk (`mkfs.ext4
  -d`, about 2 s), with the kernel and initrd to boot it.

A container instance boots from an overlay whose lower layers are the first two and whose upper layer is its
own (empty for a new instance, kept across its reboots); a VM instance from its own sparse copy of the disk.

One run at a time builds or prunes (an exclusive lock on the cache); while a run uses the layers it holds a
shared lock, so another run never prunes them from under it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("SNAPTASTIC_BOOT_CACHE", "/var/cache/snaptastic-boot-tests"))
SUITE = "bookworm"
VARIANT = "minbase"
# What an EC2 image of Debian 12 carries that the package and the tests touch; the package's own
# dependencies are here so that `dpkg -i` needs no network.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-boto3",
    "python3-requests",
    "python3-jsonschema",
    "e2fsprogs",
    "xfsprogs",
    "util-linux",
    "mount",
    "procps",
)
# A virtual machine's image is closer to an EC2 AMI: a kernel, udev (the NVMe device nodes and
# /dev/disk/by-id), cloud-init, and what the cloudinit/ examples install (the guest reaches no package
# index); and the guest agent the tests run commands through, as a console would.
VM_PACKAGES = (*PACKAGES, "linux-image-cloud-amd64", "initramfs-tools", "kmod", "udev", "cloud-init", "python3-venv",
               "qemu-guest-agent")
# The VM's one network interface: the address qemu's user-mode network expects, no DHCP wait. The metadata
# service and the EC2 endpoint are forwarded addresses on that link (see machine_vm.py).
VM_NETWORK = "[Match]\nType=ether\n\n[Network]\nAddress=169.254.0.15/16\n"
VM_FSTAB = "# /etc/fstab: static file system information.\n/dev/vda / ext4 defaults,discard 0 1\n"
VM_DISK_BYTES = 4 * 1024**3
# Changes to how a layer is made that the package list does not show: bump to rebuild.
RECIPE = 3
KEEP_BASES = 3
KEEP_PACKAGE_LAYERS = 6


@dataclass(frozen=True)
class Flavour:
    name: str
    packages: tuple[str, ...]

    def key(self) -> str:
        recipe = {"flavour": self.name, "suite": SUITE, "variant": VARIANT, "packages": sorted(self.packages), "recipe": RECIPE}
        return _digest(json.dumps(recipe, sort_keys=True).encode())


CONTAINER = Flavour("container", PACKAGES)
VM = Flavour("vm", VM_PACKAGES)


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Image:
    """The read-only layers an instance root is stacked on, top first."""

    base: Path
    package: Path

    @property
    def lower(self) -> str:
        return f"{self.package}:{self.base}"


@dataclass(frozen=True)
class VmImage:
    """A VM's boot disk (raw ext4, the package installed), and the kernel and initrd to boot it with."""

    disk: Path
    kernel: Path
    initrd: Path


@dataclass(frozen=True)
class Images:
    container: Image
    vm: VmImage


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def deb_key(deb: Path) -> str:
    """The package's files and metadata, not the .deb's bytes: a rebuild of the same tree gives the same key
    even if the archive's own timestamps differ."""
    files = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    control = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    return _digest(files, control)


def _run(argv: list[str], what: str, timeout: float) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ImageError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _build_base(flavour: Flavour, target: Path) -> None:
    """mmdebstrap into target/root, from the machine's own apt sources."""
    root = target / "root"
    _run(
        ["mmdebstrap", f"--variant={VARIANT}", f"--include={','.join(flavour.packages)}", "--quiet", SUITE, str(root)],
        "mmdebstrap",
        timeout=900,
    )
    if flavour is VM:
        (root / "etc/systemd/network").mkdir(parents=True, exist_ok=True)
        (root / "etc/systemd/network/10-ec2.network").write_text(VM_NETWORK)
        (root / "etc/fstab").write_text(VM_FSTAB)
        _run(["chroot", str(root), "systemctl", "enable", "systemd-networkd.service"], "enabling systemd-networkd", timeout=60)
        # cloud-init sets en_US.UTF-8 at first boot, and on Debian it must already be generated (as in
        # Debian's own cloud images): locale-gen there makes what /etc/locale.gen lists.
        with open(root / "etc/locale.gen", "a") as locales:
            locales.write("en_US.UTF-8 UTF-8\n")
        _run(["chroot", str(root), "locale-gen"], "locale-gen", timeout=300)


def _overlay(lower: str, upper: Path, work: Path, merged: Path) -> None:
    for path in (upper, work, merged):
        path.mkdir(parents=True, exist_ok=True)
    _run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
        "overlay mount",
        timeout=60,
    )


def _build_package_layer(base: Path, deb: Path, target: Path) -> None:
    """target/upper: what `dpkg -i` of the package changes on top of the base root."""
    merged = target / "merged"
    _overlay(str(base), target / "upper", target / "work", merged)
    try:
        _run(
            [
                "systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--pipe",
                "-D", str(merged), "-M", f"snaptastic-pkg-{os.getpid()}",
                "--setenv=DEBIAN_FRONTEND=noninteractive",
                f"--bind-ro={deb}:/run/snaptastic-boot.deb",
                "--", "dpkg", "-i", "/run/snaptastic-boot.deb",
            ],
            "dpkg -i of the package in the image",
            timeout=300,
        )
    finally:
        subprocess.run(["umount", str(merged)], check=False, capture_output=True)
        clean_nspawn_leftovers()
    shutil.rmtree(target / "work", ignore_errors=True)
    merged.rmdir()


def _build_vm_disk(base: Path, layer: Path, target: Path) -> None:
    """target/disk.raw: the base and the package layer as one ext4 file system (`mkfs.ext4 -d`, nothing mounted
    in the guest's way), and the kernel and initrd beside it."""
    merged = target / "merged"
    merged.mkdir(parents=True)
    _run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={layer}:{base}", str(merged)], "overlay mount", timeout=60)
    try:
        _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(merged), str(target / "disk.raw"), str(VM_DISK_BYTES // 1024) + "k"],
             "mkfs.ext4 -d of the VM disk", timeout=300)
    finally:
        subprocess.run(["umount", str(merged)], check=False, capture_output=True)
    merged.rmdir()
    for name in ("vmlinuz", "initrd.img"):
        (found,) = sorted((base / "boot").glob(f"{name}-*"))[-1:]
        shutil.copy(found, target / name)


def clean_nspawn_leftovers() -> None:
    """systemd-nspawn leaves empty directories under /run/systemd/nspawn when /run is not a tmpfs."""
    propagate = Path("/run/systemd/nspawn/propagate")
    for entry in propagate.glob("snaptastic-*") if propagate.is_dir() else []:
        try:
            entry.rmdir()
        except OSError:
            pass


def _publish(build, final: Path) -> None:
    """Build into a temporary directory beside `final`, then rename it into place."""
    if final.exists():
        return
    tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=CACHE))
    try:
        build(tmp)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prune(keep: set[Path]) -> None:
    for leftover in CACHE.glob("tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for pattern, limit in (("base-*", KEEP_BASES), ("pkg-*", KEEP_PACKAGE_LAYERS), ("vm-*", KEEP_PACKAGE_LAYERS)):
        entries = sorted(CACHE.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
        kept = keep | set([p for p in entries if p not in keep][:limit])
        for entry in entries:
            if entry not in kept:
                shutil.rmtree(entry, ignore_errors=True)


class Cache:
    """The cached layers for one run; `close()` releases the shared lock.

    Both flavours are prepared under one exclusive lock: a run that took the shared lock for one and then
    asked for the other would wait for every other run's shared lock, and they for its.
    """

    def __init__(self) -> None:
        self._lock_file: int | None = None
        self.built: list[str] = []
        self.seconds = 0.0

    def _layer(self, name: str, build: Any) -> Path:
        path = CACHE / name
        if not path.exists():
            self.built.append(name)
        _publish(build, path)
        now = time.time()
        os.utime(path, (now, now))
        return path

    def prepare(self, deb: Path) -> Images:
        started = time.monotonic()
        CACHE.mkdir(parents=True, exist_ok=True)
        self._lock_file = os.open(CACHE / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        package_key = deb_key(deb)
        used: set[Path] = set()
        layers: dict[str, tuple[Path, Path]] = {}
        for flavour in (CONTAINER, VM):
            base = self._layer(f"base-{flavour.key()}", lambda tmp, f=flavour: _build_base(f, tmp))
            package = self._layer(f"pkg-{flavour.key()}-{package_key}",
                                  lambda tmp, b=base: _build_package_layer(b / "root", deb, tmp))
            used |= {base, package}
            layers[flavour.name] = (base, package)
        vm_base, vm_package = layers[VM.name]
        vm = self._layer(f"vm-{VM.key()}-{package_key}", lambda tmp: _build_vm_disk(vm_base / "root", vm_package / "upper", tmp))
        used.add(vm)
        _prune(used)
        fcntl.flock(self._lock_file, fcntl.LOCK_SH)  # others may use the layers now, but not prune them
        self.seconds = time.monotonic() - started
        base, package = layers[CONTAINER.name]
        return Images(Image(base / "root", package / "upper"), VmImage(vm / "disk.raw", vm / "vmlinuz", vm / "initrd.img"))

    def close(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None
