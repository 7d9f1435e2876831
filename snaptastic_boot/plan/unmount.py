"""unmount-snapshots, deciding: per mount point, whether to unmount, and which of our volumes to detach or delete."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from snaptastic_boot.model import Mount, SnapshotterSpec, attachment_state
from snaptastic_boot.plan.restore import current_volume


@dataclass(frozen=True)
class UnmountStep:
    mount_point: str
    mounted: bool
    volume_id: str | None
    attached: bool
    delete: bool


@dataclass(frozen=True)
class UnmountPlan:
    snapshotter: str
    instance_id: str
    steps: tuple[UnmountStep, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [f"unmount plan for snapshotter '{self.snapshotter}' on {self.instance_id}:"]
        for s in self.steps:
            acts = (["unmount"] if s.mounted else []) + ["remove fstab entry"]
            if s.volume_id and s.attached:
                acts.append(f"detach {s.volume_id}")
            if s.volume_id and s.delete:
                acts.append(f"delete {s.volume_id}")
            lines.append(f"  {s.mount_point}: {', '.join(acts)}")
        return "\n".join(lines)


def plan_unmount(
    spec: SnapshotterSpec, instance_id: str, our_volumes: Sequence[dict[str, Any]], mounts: Sequence[Mount], delete: bool
) -> UnmountPlan:
    mounted = {m.mount_point for m in mounts}
    steps = []
    for v in spec.volumes:
        chosen = current_volume(our_volumes, instance_id, v.mount_point, spec.filter_tags)
        attached = bool(chosen and attachment_state(chosen, instance_id))
        steps.append(UnmountStep(v.mount_point, v.mount_point in mounted, chosen["VolumeId"] if chosen else None,
                                 attached, delete))
    return UnmountPlan(spec.name, instance_id, tuple(steps))
