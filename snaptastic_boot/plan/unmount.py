"""unmount-snapshots: unmount, drop our fstab lines, detach (and with --delete, delete) the volumes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from snaptastic_boot import times
from snaptastic_boot.system import fstab
from snaptastic_boot.apply import waits
from snaptastic_boot.system.devices import Devices, Mount
from snaptastic_boot.ec2 import Ec2
from snaptastic_boot.model import SnapshotterSpec
from snaptastic_boot.plan.restore import DETACHED_TAG, current_volume

log = logging.getLogger("snaptastic.unmount")

DETACH_WAIT = 120.0


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
        attached = bool(chosen and any(a.get("InstanceId") == instance_id for a in chosen.get("Attachments") or []))
        steps.append(UnmountStep(v.mount_point, v.mount_point in mounted, chosen["VolumeId"] if chosen else None,
                                 attached, delete))
    return UnmountPlan(spec.name, instance_id, tuple(steps))


class Unmounter:
    def __init__(self, ec2: Ec2, devices: Devices, fstab_path: Path, hooks: Any = None) -> None:
        self.ec2 = ec2
        self.devices = devices
        self.fstab_path = fstab_path
        self.hooks = hooks

    def apply(self, plan: UnmountPlan, hook_volumes: dict[str, Any]) -> dict[str, Any]:
        done: list[str] = []
        vols = [hook_volumes[s.mount_point] for s in plan.steps if s.mount_point in hook_volumes]
        if self.hooks is not None:
            self.hooks.pre_unmounts(vols)
        for s in plan.steps:
            if self.hooks is not None and s.mount_point in hook_volumes:
                self.hooks.pre_unmount(hook_volumes[s.mount_point])
            if s.mounted:
                self.devices.umount(s.mount_point)
                done.append(f"unmounted {s.mount_point}")
        old = fstab.read(self.fstab_path)
        if fstab.write_atomic(self.fstab_path, fstab.merge(old, remove=[s.mount_point for s in plan.steps])):
            done.append("removed fstab entries")
        detach = [s for s in plan.steps if s.volume_id and s.attached]
        for s in detach:
            self.ec2.detach_volume(s.volume_id or "")
        if detach:
            waits.until("volumes detached", [s.volume_id or "" for s in detach],
                        lambda ids: {v["VolumeId"]: v for v in self.ec2.describe_volumes(volume_ids=ids)},
                        lambda v: v.get("State") == "available", limit=waits.timeout(DETACH_WAIT))
            # Marked so the next mount-snapshots restores from the newest snapshot instead of reattaching a
            # volume the user took away on purpose (an interrupted run's volumes carry no such mark).
            self.ec2.create_tags([s.volume_id or "" for s in detach], {DETACHED_TAG: times.iso(times.now())})
            done += [f"detached {s.volume_id} from {s.mount_point}" for s in detach]
        for s in plan.steps:
            if s.volume_id and s.delete:
                self.ec2.delete_volume(s.volume_id)
                done.append(f"deleted {s.volume_id}")
            if self.hooks is not None and s.mount_point in hook_volumes:
                self.hooks.post_unmount(hook_volumes[s.mount_point])
        if self.hooks is not None:
            self.hooks.post_unmounts(vols)
        return {"snapshotter": plan.snapshotter, "done": done, "api_calls": dict(self.ec2.calls)}
