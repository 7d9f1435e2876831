"""unmount-snapshots, deciding: per mount point, whether to unmount, and which of our volumes to detach or delete.

A volume is snapshotted after it is unmounted and before it is detached, as one snapshot set: the next
mount-snapshots then restores every byte written before the unmount, and `clean volumes` can prove that the
detached volume's data exists elsewhere before it deletes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from snaptastic_boot import tags, times
from snaptastic_boot.model import Mount, SnapshotterSpec, attachment, attachment_state
from snaptastic_boot.plan import sets
from snaptastic_boot.plan.restore import current_volume

ATTACHED_STATES = ("attaching", "attached", "detaching", "busy")


@dataclass(frozen=True)
class UnmountStep:
    mount_point: str
    mounted: bool
    volume_id: str | None
    attached: bool
    delete: bool
    device: str | None = None  # the attachment's device name, for a volume attached here


@dataclass(frozen=True)
class UnmountPlan:
    snapshotter: str
    instance_id: str
    steps: tuple[UnmountStep, ...]
    snapshot_tags: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def to_snapshot(self) -> tuple[UnmountStep, ...]:
        """Every attached volume, snapshotted once unmounted, before it is detached; and every volume that is
        going to be deleted, attached or not (one detached behind the agent's back may hold writes no
        snapshot has)."""
        return tuple(s for s in self.steps if s.volume_id and (s.attached or s.delete))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [f"unmount plan for snapshotter '{self.snapshotter}' on {self.instance_id}:"]
        for s in self.steps:
            acts = (["unmount"] if s.mounted else []) + ["remove fstab entry"]
            if s in self.to_snapshot:
                acts.append(f"snapshot {s.volume_id}")
            if s.volume_id and s.attached:
                acts.append(f"detach {s.volume_id}")
            if s.volume_id and s.delete:
                acts.append(f"delete {s.volume_id}")
            lines.append(f"  {s.mount_point}: {', '.join(acts)}")
        if self.to_snapshot:
            lines.append(f"  snapshot set {self.snapshot_tags[tags.SNAPSHOT_SET]}, expires {self.snapshot_tags[tags.EXPIRES]}")
        return "\n".join(lines)


def plan_unmount(
    spec: SnapshotterSpec, instance_id: str, our_volumes: Sequence[dict[str, Any]], mounts: Sequence[Mount], delete: bool,
    description: str = "", now: dt.datetime | None = None,
) -> UnmountPlan:
    mounted = {m.mount_point for m in mounts}
    steps = []
    for v in spec.volumes:
        chosen = current_volume(our_volumes, instance_id, v.mount_point, spec.filter_tags)
        attached = bool(chosen and attachment_state(chosen, instance_id))
        device = (attachment(chosen, instance_id, states=ATTACHED_STATES) or {}).get("Device") if chosen else None
        steps.append(UnmountStep(v.mount_point, v.mount_point in mounted, chosen["VolumeId"] if chosen else None,
                                 attached, delete, device))
    now = now or times.now()
    expires = times.iso(now + dt.timedelta(days=spec.retention.days))
    snapshot_tags = {**spec.filter_tags, tags.INSTANCE_ID: instance_id, tags.CREATED: times.iso(now),
                     tags.EXPIRES: expires, tags.SNAPSHOT_SET: sets.new_set_id(now)}
    return UnmountPlan(spec.name, instance_id, tuple(steps), snapshot_tags, description[:255])
