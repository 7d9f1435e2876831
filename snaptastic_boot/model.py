"""The internal model both configuration forms produce, its defaults, and the checks EC2 and the OS would
otherwise fail late. Also the plain views of what the system and EC2 report (mounts, attachments)."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from snaptastic_boot.tags import IDENTITY_KEYS

# The one home of every default; the settings-file class constants and the JSON schema's "default"s repeat
# these values for readers, and a test checks that they agree.
DEFAULT_FILTER_KEYS = IDENTITY_KEYS
DEFAULT_EXPIRY_DAYS = 7.0
DEFAULT_KEEP = 3
DEFAULT_PENDING_SNAPSHOT_WAIT = 600.0
DEFAULT_DESCRIPTION_FORMAT = "%(cluster)s snapshot of %(mount_point)s"
DEFAULT_SIZE = 5
DEFAULT_FILESYSTEM = "ext4"
DEFAULT_VOLUME_TYPE = "gp3"
DEFAULT_MOUNT_OPTIONS = "defaults"
DEFAULT_DELETE_ON_TERMINATION = True
DEFAULT_CONSISTENT_RESTORE = True
DEFAULT_REUSE_VOLUMES = False
# Regions that get a copy of every complete snapshot set (copy-snapshots): none.
DEFAULT_DESTINATION_REGIONS: tuple[str, ...] = ()
# `snaptastic watch`: seconds between two polls of the metadata service, and the bounds of --interval. A Spot
# notice comes two minutes ahead: five seconds leaves nearly all of them to the snapshot.
DEFAULT_WATCH_INTERVAL = 5.0
WATCH_INTERVAL_LIMITS = (0.1, 60.0)
FILESYSTEMS = ("ext4", "xfs")
VOLUME_TYPES = ("gp3", "gp2", "io1", "io2", "st1", "sc1", "standard")

# Device names EC2 accepts for EBS data volumes on Linux (the root device is /dev/sda1 or /dev/xvda).
DEVICE_RE = re.compile(r"^/dev/(sd[b-z]|xvd[b-z]|xvd[b-c][a-z])$")
MOUNT_OPTIONS_RE = re.compile(r"^[A-Za-z0-9_=,.:/@+-]+$")
MOUNT_POINT_RE = re.compile(r"^/[A-Za-z0-9_.:@+=,/-]*$")
SYSTEM_PATHS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin", "/sys", "/usr")
SYSTEM_EXACT = ("/", "/var", "/tmp", "/root", "/home", "/mnt", "/media", "/opt", "/srv")

# (min, max) size in GiB; iops and throughput ranges per type, None where the type takes none.
SIZE_LIMITS = {
    "gp3": (1, 16384), "gp2": (1, 16384), "io1": (4, 16384), "io2": (4, 65536),
    "st1": (125, 16384), "sc1": (125, 16384), "standard": (1, 1024),
}
IOPS_LIMITS = {"gp3": (3000, 16000), "io1": (100, 64000), "io2": (100, 256000)}
THROUGHPUT_LIMITS = {"gp3": (125, 1000)}
# How many snapshots of one volume may be pending at once (beyond: SnapshotCreationPerVolumeRateExceeded).
PENDING_SNAPSHOT_LIMITS = {"st1": 1, "sc1": 1}
DEFAULT_PENDING_SNAPSHOT_LIMIT = 5


@dataclass(frozen=True)
class VolumeSpec:
    device: str
    mount_point: str
    size: int = DEFAULT_SIZE
    filesystem: str = DEFAULT_FILESYSTEM
    volume_type: str = DEFAULT_VOLUME_TYPE
    iops: int | None = None
    throughput: int | None = None
    encrypted: bool = False
    kms_key_id: str | None = None
    mount_options: str = DEFAULT_MOUNT_OPTIONS
    delete_on_termination: bool = DEFAULT_DELETE_ON_TERMINATION
    initialization_rate: int | None = None


@dataclass(frozen=True)
class Retention:
    days: float = DEFAULT_EXPIRY_DAYS
    keep: int = DEFAULT_KEEP


@dataclass(frozen=True)
class SnapshotterSpec:
    """What a snapshotter asks for, independent of whether it came from Python or JSON."""

    name: str
    volumes: tuple[VolumeSpec, ...]
    filter_tags: dict[str, str]
    retention: Retention = field(default_factory=Retention)
    pending_snapshot_wait: float = DEFAULT_PENDING_SNAPSHOT_WAIT
    description_format: str = DEFAULT_DESCRIPTION_FORMAT
    # Restore all mount points from one snapshot set (one point in time); false: each from its own newest.
    consistent_restore: bool = DEFAULT_CONSISTENT_RESTORE
    reuse_volumes: bool = DEFAULT_REUSE_VOLUMES
    destination_regions: tuple[str, ...] = DEFAULT_DESTINATION_REGIONS


@dataclass(frozen=True)
class Mount:
    """One line of the mount table."""

    mount_point: str
    source: str
    fstype: str
    major_minor: str
    options: str


@dataclass(frozen=True)
class Probe:
    """What a block device holds, as blkid sees it."""

    fstype: str | None
    uuid: str | None
    pttype: str | None

    @property
    def blank(self) -> bool:
        return not self.fstype and not self.pttype


# A filesystem smaller than its volume by more than this is grown: EBS sizes come in whole GiB, and a
# filesystem that fills its device leaves less than this unused.
GROW_MARGIN = 64 * 1024 * 1024


def needs_grow(filesystem_bytes: int | None, device_bytes: int) -> bool:
    return filesystem_bytes is not None and device_bytes - filesystem_bytes > GROW_MARGIN


# -- EC2 resources as DescribeVolumes returns them ------------------------------------------------------------

GONE_STATES = ("deleting", "deleted", "error")


def attachment(volume: dict[str, Any], instance_id: str, states: tuple[str, ...] = ("attaching", "attached")) -> dict[str, Any] | None:
    """The volume's attachment to this instance in one of `states`, if any."""
    for att in volume.get("Attachments") or []:
        if att.get("InstanceId") == instance_id and att.get("State") in states:
            return dict(att)
    return None


def attachment_state(volume: dict[str, Any], instance_id: str) -> str:
    """The state of the volume's attachment to this instance, "" when there is none."""
    att = attachment(volume, instance_id, states=("attaching", "attached", "detaching", "detached", "busy"))
    return str(att.get("State", "")) if att else ""


def volume_problems(volumes: Iterable[VolumeSpec], where: str = "volumes") -> list[tuple[str, str]]:
    """Every problem with a list of volumes as (path, message); empty when they are fine."""
    problems: list[tuple[str, str]] = []
    seen_mounts: dict[str, int] = {}
    seen_devices: dict[str, int] = {}
    for i, v in enumerate(volumes):
        at = f"{where}[{i}]"
        problems += [(f"{at}.{key}", msg) for key, msg in _one_volume(v)]
        mount = posixpath.normpath(v.mount_point) if v.mount_point.startswith("/") else v.mount_point
        for key, value, seen in (("mount_point", mount, seen_mounts), ("device", canonical_device(v.device), seen_devices)):
            if value in seen:
                problems.append((f"{at}.{key}", f"duplicate of {where}[{seen[value]}].{key}; give each volume its own"))
            else:
                seen[value] = i
        for other, j in seen_mounts.items():
            if j != i and (mount.startswith(other.rstrip("/") + "/") or other.startswith(mount.rstrip("/") + "/")):
                problems.append((f"{at}.mount_point", f"nested with {where}[{j}].mount_point; mount points must not contain each other"))
    return problems


def reuse_problems(spec: SnapshotterSpec) -> list[tuple[str, str]]:
    """Reusing a replaced instance's volumes needs them to outlive it."""
    if not spec.reuse_volumes:
        return []
    return [(f"snapshotters.{spec.name}.volumes[{i}].delete_on_termination",
             "must be false with reuse_volumes: a volume deleted with its instance cannot be reattached by the next")
            for i, v in enumerate(spec.volumes) if v.delete_on_termination]


def canonical_device(device: str) -> str:
    """`/dev/xvdf` and `/dev/sdf` name the same attachment point."""
    return device.replace("/dev/xvd", "/dev/sd", 1)


def clash_problems(volumes_by_snapshotter: dict[str, Iterable[VolumeSpec]], name: str | None = None) -> list[tuple[str, str]]:
    """A device or mount point that two snapshotters both claim (only those of `name`, when given): the
    second would attach over the first, or adopt and snapshot the first one's volume."""
    owners: dict[tuple[str, str], str] = {}
    problems: list[tuple[str, str]] = []
    for snapshotter in sorted(volumes_by_snapshotter):
        for v in volumes_by_snapshotter[snapshotter]:
            for key, value in (("device", canonical_device(v.device)), ("mount_point", posixpath.normpath(v.mount_point))):
                first = owners.setdefault((key, value), snapshotter)
                if first != snapshotter and name in (None, first, snapshotter):
                    problems.append((f"snapshotters.{snapshotter}.volumes.{key}",
                                     f"{value} is also used by snapshotter '{first}'; give each snapshotter its own"))
    return problems


def _one_volume(v: VolumeSpec) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not DEVICE_RE.match(v.device):
        out.append(("device", f"'{v.device}' is not a device name EC2 accepts for a data volume; use /dev/sdf to /dev/sdp"))
    mp = v.mount_point
    if not mp.startswith("/"):
        out.append(("mount_point", f"'{mp}' must be an absolute path like /mnt/data"))
    elif ".." in mp.split("/"):
        out.append(("mount_point", f"'{mp}' must not contain '..'"))
    elif posixpath.normpath(mp) != mp:
        out.append(("mount_point", f"'{mp}' is not normalised; write {posixpath.normpath(mp)}"))
    elif not MOUNT_POINT_RE.match(mp):
        out.append(("mount_point", f"'{mp}' has characters that are not allowed (spaces, quotes, #, control characters)"))
    elif mp in SYSTEM_EXACT or any(mp == p or mp.startswith(p + "/") for p in SYSTEM_PATHS):
        out.append(("mount_point", f"'{mp}' is a system path; use a directory of its own like /mnt/data or /var/lib/app"))
    if v.filesystem not in FILESYSTEMS:
        out.append(("filesystem", f"must be one of {', '.join(FILESYSTEMS)}"))
    if v.volume_type not in VOLUME_TYPES:
        out.append(("volume_type", f"must be one of {', '.join(VOLUME_TYPES)}"))
        return out
    low, high = SIZE_LIMITS[v.volume_type]
    if not isinstance(v.size, int) or isinstance(v.size, bool) or not low <= v.size <= high:
        out.append(("size", f"must be a whole number of GiB from {low} to {high} for {v.volume_type}"))
    for key, value, limits in (("iops", v.iops, IOPS_LIMITS), ("throughput", v.throughput, THROUGHPUT_LIMITS)):
        if value is None:
            continue
        if v.volume_type not in limits:
            takers = ", ".join(limits)
            out.append((key, f"{v.volume_type} volumes take no {key}; remove it or use {takers}"))
        elif not limits[v.volume_type][0] <= value <= limits[v.volume_type][1]:
            out.append((key, f"must be from {limits[v.volume_type][0]} to {limits[v.volume_type][1]} for {v.volume_type}"))
    if v.volume_type in ("io1", "io2") and v.iops is None:
        out.append(("iops", f"{v.volume_type} volumes need iops"))
    if not MOUNT_OPTIONS_RE.match(v.mount_options or ""):
        out.append(("mount_options", "must be a comma-separated list of plain options like defaults,noatime"))
    if v.kms_key_id and not v.encrypted:
        out.append(("kms_key_id", "needs \"encrypted\": true"))
    return out
