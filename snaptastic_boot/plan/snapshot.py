"""make-snapshots: find the volume behind each mount point, freeze them all, snapshot in one call, thaw.

One CreateSnapshots call covers every volume (crash-consistent across volumes, and the freeze stays one API
round trip wide whatever their number). Tags are copied from each volume, so each snapshot carries its own
mount_point; the tags the next boot searches for are made sure of on the volume before the freeze.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from snaptastic_boot import times
from snaptastic_boot.apply import waits
from snaptastic_boot.system.devices import Devices, Mount
from snaptastic_boot.ec2 import Ec2, tags_of
from snaptastic_boot.errors import AwsError, BadInput, OperationFailed, UnsafeOperation
from snaptastic_boot.apply.freeze import frozen, max_freeze_seconds
from snaptastic_boot.model import SnapshotterSpec
from snaptastic_boot.times import iso

log = logging.getLogger("snaptastic.snapshots")

# CreateSnapshots can be refused by policy or unsupported; then each volume gets CreateSnapshot.
FALLBACK_CODES = ("UnauthorizedOperation", "AccessDenied", "UnsupportedOperation", "InvalidParameterCombination",
                  "OperationNotPermitted")
SNAPSHOT_WAIT = 3600.0


@dataclass(frozen=True)
class Target:
    mount_point: str
    volume_id: str
    device: str
    local_device: str
    missing_tags: dict[str, str]


@dataclass(frozen=True)
class SnapshotPlan:
    snapshotter: str
    instance_id: str
    targets: tuple[Target, ...]
    exclude_volume_ids: tuple[str, ...]
    tags: dict[str, str]
    description: str
    freeze: bool
    expires: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [f"snapshot plan for snapshotter '{self.snapshotter}' on {self.instance_id}:"]
        for t in self.targets:
            extra = f"; lacks tags {sorted(t.missing_tags)}, so snapshots are taken one per volume" if t.missing_tags else ""
            lines.append(f"  {t.mount_point}: {t.volume_id} ({t.device}, {t.local_device}){extra}")
        lines.append(f"  {'freeze all, ' if self.freeze else ''}one CreateSnapshots call excluding the boot volume"
                     f"{' and ' + ', '.join(self.exclude_volume_ids) if self.exclude_volume_ids else ''}")
        lines.append(f"  tags: {self.tags} + mount_point per volume; expires {self.expires}")
        return "\n".join(lines)


@dataclass
class SnapshotReport:
    snapshotter: str
    snapshots: dict[str, str]
    freeze_ms: float
    blocked_ms: float
    api_ms: float
    watchdog_fired: bool
    fallback: bool
    api_calls: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def block_devices(instance: dict[str, Any]) -> list[tuple[str, str]]:
    """(device name, volume id) of every EBS volume attached to the instance."""
    return [(m["DeviceName"], m["Ebs"]["VolumeId"]) for m in instance.get("BlockDeviceMappings", []) if m.get("Ebs")]


def local_devices(devices: Devices, instance: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """volume id -> (local device path, major:minor) for the attached volumes whose device is present."""
    out = {}
    for dev, vid in block_devices(instance):
        path = devices.find(vid, dev)
        if path is not None:
            out[vid] = (str(path), devices.major_minor(path))
    return out


def plan_snapshots(spec: SnapshotterSpec, description: str, instance: dict[str, Any], mounts: Sequence[Mount],
                   local: dict[str, tuple[str, str]], freeze: bool = True, now: dt.datetime | None = None) -> SnapshotPlan:
    """Map each configured mount point to its EBS volume through the instance's block device mapping."""
    now = now or times.now()
    instance_id = instance["InstanceId"]
    root_device = instance.get("RootDeviceName", "")
    mappings = block_devices(instance)
    by_mount = {m.mount_point: m for m in mounts}
    root_mount = by_mount.get("/")
    targets: list[Target] = []
    for v in spec.volumes:
        mount = by_mount.get(v.mount_point)
        if mount is None:
            raise OperationFailed(f"{v.mount_point} is not mounted; nothing to snapshot (run mount-snapshots first)")
        if v.mount_point == "/" or (root_mount is not None and mount.major_minor == root_mount.major_minor):
            raise UnsafeOperation(f"{v.mount_point} is the root filesystem; refusing to freeze it")
        match = [(dev, vid) for dev, vid in mappings if vid in local and local[vid][1] == mount.major_minor]
        if not match:
            raise OperationFailed(f"{v.mount_point} is mounted from {mount.source}, which is not an EBS volume attached to {instance_id}")
        dev, vid = match[0]
        if dev == root_device:
            raise UnsafeOperation(f"{v.mount_point} is on the boot volume {vid}; refusing to freeze it")
        targets.append(Target(v.mount_point, vid, dev, local[vid][0], {}))
    wanted = {t.volume_id for t in targets}
    exclude = tuple(sorted(vid for dev, vid in mappings if vid not in wanted and dev != root_device))
    expires = now + dt.timedelta(days=spec.retention.days)
    tags = {**spec.filter_tags, "instance_id": instance_id, "created": iso(now), "expires": iso(expires)}
    return SnapshotPlan(spec.name, instance_id, tuple(targets), exclude, tags, description[:255], freeze, iso(expires))


def description(snapshotter: Any, spec: SnapshotterSpec) -> str:
    """Like the original's "<cluster> snapshot of <mount point>"; one text for all snapshots of one call."""
    return _description(snapshotter, spec, [v.mount_point for v in spec.volumes])


def _description(snapshotter: Any, spec: SnapshotterSpec, mount_points: Sequence[str]) -> str:
    vols = [v for v in snapshotter.get_volumes() if v.mount_point in mount_points] if snapshotter else []
    if len(vols) == 1:
        text = str(snapshotter.get_snapshot_description(vols[0]))
    else:
        values = {**getattr(snapshotter, "userdata", {}), "mount_point": " ".join(mount_points)}
        try:
            text = (spec.description_format % values).replace("_", "-")
        except (KeyError, ValueError, TypeError):
            text = f"snapshot of {' '.join(mount_points)}"
    return text[:255]


def with_missing_tags(plan: SnapshotPlan, filter_tags: dict[str, str], volumes: Sequence[dict[str, Any]]) -> SnapshotPlan:
    """Note, per target, which of the tags the next boot searches for its volume lacks (made by hand or by
    another tool): copying the volume's tags would not give its snapshot those."""
    by_id = {v["VolumeId"]: tags_of(v) for v in volumes}
    targets = []
    for t in plan.targets:
        have = by_id.get(t.volume_id, {})
        want = {**filter_tags, "mount_point": t.mount_point}
        targets.append(replace(t, missing_tags={k: v for k, v in want.items() if have.get(k) != v}))
    return replace(plan, targets=tuple(targets))


class Snapshotting:
    def __init__(self, ec2: Ec2, devices: Devices, hooks: Any = None, max_freeze: float | None = None) -> None:
        self.ec2 = ec2
        self.devices = devices
        self.hooks = hooks
        self.max_freeze = max_freeze_seconds() if max_freeze is None else max_freeze

    def apply(self, plan: SnapshotPlan, hook_volumes: dict[str, Any], wait: bool = False) -> SnapshotReport:
        if not plan.targets:
            raise BadInput(f"snapshotter '{plan.snapshotter}' has no volumes to snapshot")
        vols = [hook_volumes[t.mount_point] for t in plan.targets if t.mount_point in hook_volumes]
        for t in plan.targets:
            # The device must still be the volume the snapshot is going to be of.
            self.devices.verify_identity(Path(t.local_device), t.volume_id)
            # A run killed while frozen leaves the filesystem frozen until someone thaws it: do that first.
            self.devices.thaw(t.mount_point)
        untagged = [t.volume_id for t in plan.targets if t.missing_tags]
        if untagged:
            # Tags copied from such a volume would not let the next boot find its snapshot, and the agent
            # does not retag volumes it did not make: each snapshot gets its tags explicitly instead.
            log.warning("volumes %s lack this snapshotter's tags; taking one snapshot per volume with explicit tags",
                        ", ".join(untagged))
        self._hook("pre_snapshots", vols)
        for t in plan.targets:
            if t.mount_point in hook_volumes:
                self._hook("pre_snapshot", hook_volumes[t.mount_point])
        mount_points = [t.mount_point for t in plan.targets] if plan.freeze else []
        # botocore builds an operation's model on its first call; not while the filesystems are frozen.
        self.ec2.prepare("CreateSnapshot" if untagged else "CreateSnapshots", "CreateSnapshot")
        api_started = api_done = 0.0
        with frozen(mount_points, self.devices.freeze, self.devices.thaw, self.max_freeze, flush=self.devices.flush) as window:
            api_started = time.monotonic()
            made, fallback = self._take(plan, per_volume=bool(untagged))
            api_done = time.monotonic()
        by_volume = {s["VolumeId"]: s["SnapshotId"] for s in made}
        result = {t.mount_point: by_volume[t.volume_id] for t in plan.targets if t.volume_id in by_volume}
        lost = [t.mount_point for t in plan.targets if t.volume_id not in by_volume]
        if lost:
            raise OperationFailed(f"EC2 returned no snapshot for {', '.join(lost)}")
        for t in plan.targets:
            log.info("snapshot %s of %s (%s)", result[t.mount_point], t.mount_point, t.volume_id)
            if t.mount_point in hook_volumes:
                self._hook("post_snapshot", hook_volumes[t.mount_point])
        self._hook("post_snapshots", vols)
        if wait:
            waits.until("snapshots completed", list(result.values()),
                        lambda ids: {s["SnapshotId"]: s for s in self.ec2.describe_snapshots([], snapshot_ids=ids)},
                        lambda s: s.get("State") == "completed",
                        failed=lambda s: "failed" if s.get("State") == "error" else None,
                        limit=waits.timeout(SNAPSHOT_WAIT))
        return SnapshotReport(plan.snapshotter, result, round(window.max_ms, 1), round(window.blocked_ms, 1),
                              round((api_done - api_started) * 1000, 1),
                              window.watchdog_fired, fallback, dict(self.ec2.calls))

    def _take(self, plan: SnapshotPlan, per_volume: bool) -> tuple[list[dict[str, Any]], bool]:
        """The snapshots, in one CreateSnapshots call unless that cannot be used; and whether it was not."""
        if not per_volume:
            try:
                return self.ec2.create_snapshots(plan.instance_id, plan.exclude_volume_ids, plan.tags, plan.description), False
            except AwsError as exc:
                if exc.code not in FALLBACK_CODES:
                    raise
                log.warning("CreateSnapshots refused (%s); taking one snapshot per volume", exc.code)
        made = [self.ec2.create_snapshot(t.volume_id, plan.description, {**plan.tags, "mount_point": t.mount_point})
                for t in plan.targets]
        return made, True

    def _hook(self, name: str, arg: Any) -> None:
        if self.hooks is not None:
            getattr(self.hooks, name)(arg)
