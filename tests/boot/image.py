"""The root file system the boot tests run the package in: Debian 12 with systemd, plus the built .deb.

Two layers, each built once and kept in a cache outside the repository (SNAPTASTIC_BOOT_CACHE, by default
/var/cache/snaptastic-boot-tests), named by a hash of what goes into it:

- `base-<hash of the package list and the recipe>/root`: what `mmdebstrap` makes (about 35-55 s, 390 MB);
  rebuilt only when the list below or the recipe changes.
- `pkg-<base hash>-<hash of the .deb's files>/upper`: the package installed with `dpkg -i` on an overlay of
  the base (under a second); rebuilt whenever the package's content changes, i.e. for most commits.

Every instance then boots from an overlay whose lower layers are these two and whose upper layer is its own
(empty for a new instance, kept across its reboots), so nothing is copied per boot.

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
# Changes to how a layer is made that the package list does not show: bump to rebuild.
RECIPE = 1
KEEP_BASES = 2
KEEP_PACKAGE_LAYERS = 4


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


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def base_key() -> str:
    recipe = {"suite": SUITE, "variant": VARIANT, "packages": sorted(PACKAGES), "recipe": RECIPE}
    return _digest(json.dumps(recipe, sort_keys=True).encode())


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


def _build_base(target: Path) -> None:
    """mmdebstrap into target/root, from the machine's own apt sources."""
    _run(
        ["mmdebstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", "--quiet", SUITE, str(target / "root")],
        "mmdebstrap",
        timeout=900,
    )


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


def _prune(keep_base: Path, keep_package: Path) -> None:
    for leftover in CACHE.glob("tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for pattern, keep, current in (("base-*", KEEP_BASES, keep_base), ("pkg-*", KEEP_PACKAGE_LAYERS, keep_package)):
        entries = sorted(CACHE.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
        kept = [current, *[p for p in entries if p != current][: keep - 1]]
        for entry in entries:
            if entry not in kept:
                shutil.rmtree(entry, ignore_errors=True)


class Cache:
    """The cached layers for one run; `close()` releases the shared lock."""

    def __init__(self) -> None:
        self._lock_file: int | None = None
        self.built: list[str] = []
        self.seconds = 0.0

    def prepare(self, deb: Path) -> Image:
        started = time.monotonic()
        CACHE.mkdir(parents=True, exist_ok=True)
        self._lock_file = os.open(CACHE / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        base = CACHE / f"base-{base_key()}"
        if not base.exists():
            self.built.append(base.name)
        _publish(_build_base, base)
        package = CACHE / f"pkg-{base.name.removeprefix('base-')}-{deb_key(deb)}"
        if not package.exists():
            self.built.append(package.name)
        _publish(lambda tmp: _build_package_layer(base / "root", deb, tmp), package)
        now = time.time()
        for used in (base, package):
            os.utime(used, (now, now))
        _prune(base, package)
        fcntl.flock(self._lock_file, fcntl.LOCK_SH)  # others may use the layers now, but not prune them
        self.seconds = time.monotonic() - started
        return Image(base / "root", package / "upper")

    def close(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None
