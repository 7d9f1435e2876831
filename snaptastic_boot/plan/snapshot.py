"""make-snapshots, deciding: which EBS volume is behind each mount point, what to exclude, which tags.

Pure: it works from the instance's block device mapping, the mount table and the local devices gathered
first (`apply.snapshot` freezes, snapshots in one call and thaws). Tags are copied from each volume, so each
snapshot carries its own mount_point; a volume that lacks the snapshotter's tags is noted, so that its
snapshot gets them explicitly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from snaptastic_boot import messages, tags, times
from snaptastic_boot.errors import OperationFailed, UnsafeOperation
from snaptastic_boot.model import DEFAULT_PENDING_SNAPSHOT_LIMIT, PENDING_SNAPSHOT_LIMITS, Mount, SnapshotterSpec
from snaptastic_boot.plan import sets


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


def block_devices(instance: dict[str, Any]) -> list[tuple[str, str]]:
    """(device name, volume id) of every EBS volume attached to the instance."""
    return [(m["DeviceName"], m["Ebs"]["VolumeId"]) for m in instance.get("BlockDeviceMappings", []) if m.get("Ebs")]


def plan_snapshots(spec: SnapshotterSpec, description: str, instance: dict[str, Any], mounts: Sequence[Mount],
                   local: dict[str, tuple[str, str]], freeze: bool = True, now: dt.datetime | None = None,
                   set_id: str | None = None) -> SnapshotPlan:
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
            raise OperationFailed(messages.not_mounted(v.mount_point))
        if v.mount_point == "/" or (root_mount is not None and mount.major_minor == root_mount.major_minor):
            raise UnsafeOperation(messages.root_filesystem(v.mount_point))
        match = [(dev, vid) for dev, vid in mappings if vid in local and local[vid][1] == mount.major_minor]
        if not match:
            raise OperationFailed(messages.not_an_attached_volume(v.mount_point, mount.source, instance_id))
        dev, vid = match[0]
        if dev == root_device:
            raise UnsafeOperation(messages.boot_volume(v.mount_point, vid))
        targets.append(Target(v.mount_point, vid, dev, local[vid][0], {}))
    wanted = {t.volume_id for t in targets}
    exclude = tuple(sorted(vid for dev, vid in mappings if vid not in wanted and dev != root_device))
    expires = now + dt.timedelta(days=spec.retention.days)
    # One set id for every snapshot of this run: the restore takes them together or not at all.
    set_id = set_id or sets.new_set_id(now)
    snapshot_tags = {**spec.filter_tags, tags.INSTANCE_ID: instance_id, tags.CREATED: times.iso(now),
                     tags.EXPIRES: times.iso(expires), tags.SNAPSHOT_SET: set_id}
    return SnapshotPlan(spec.name, instance_id, tuple(targets), exclude, snapshot_tags, description[:255], freeze,
                        times.iso(expires))


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
    by_id = {v["VolumeId"]: tags.tags_of(v) for v in volumes}
    targets = []
    for t in plan.targets:
        have = by_id.get(t.volume_id, {})
        want = {**filter_tags, tags.MOUNT_POINT: t.mount_point}
        targets.append(replace(t, missing_tags={k: v for k, v in want.items() if have.get(k) != v}))
    return replace(plan, targets=tuple(targets))


def check_pending_limits(plan: SnapshotPlan, volumes: Sequence[dict[str, Any]], pending: Sequence[dict[str, Any]]) -> None:
    """Refuse, before anything is frozen, when a volume already has as many pending snapshots as EBS allows:
    the call would fail after the freeze. The periodic timer's next run tries again."""
    types = {v["VolumeId"]: v.get("VolumeType", "") for v in volumes}
    for t in plan.targets:
        waiting = sorted(s["SnapshotId"] for s in pending if s.get("VolumeId") == t.volume_id and s.get("State") == "pending")
        limit = PENDING_SNAPSHOT_LIMITS.get(types.get(t.volume_id, ""), DEFAULT_PENDING_SNAPSHOT_LIMIT)
        if len(waiting) >= limit:
            raise OperationFailed(messages.pending_limit(t.mount_point, t.volume_id, limit, waiting))
