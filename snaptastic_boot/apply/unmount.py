"""unmount-snapshots, applying: unmount, drop our fstab lines, detach (and with --delete, delete) the volumes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snaptastic_boot import tags, times
from snaptastic_boot.apply import waits
from snaptastic_boot.apply.hooks import Hooks
from snaptastic_boot.apply.parallel import run_all
from snaptastic_boot.plan.unmount import UnmountPlan
from snaptastic_boot.system import fstab
from snaptastic_boot.system.interfaces import DeviceAdapter, Ec2Api

log = logging.getLogger("snaptastic.unmount")

DETACH_WAIT = 120.0


@dataclass
class Unmounter:
    ec2: Ec2Api
    devices: DeviceAdapter
    fstab_path: Path
    hooks: Hooks = field(default_factory=Hooks)
    wait_timeout: float | None = None

    def apply(self, plan: UnmountPlan) -> dict[str, Any]:
        done: list[str] = []
        mount_points = [s.mount_point for s in plan.steps]
        self.hooks.call_all("pre_unmounts", mount_points)
        # Unmounted here, perhaps by an earlier run that failed because a copy of the mount elsewhere held on:
        # checked before anything changes, so that nothing is detached from under that copy.
        for s in plan.to_snapshot:
            path = None if s.mounted or not s.device else self.devices.find(s.volume_id or "", s.device)
            if path is not None:
                self.devices.wait_released(s.mount_point, path)
        for s in plan.steps:
            self.hooks.call_one("pre_unmount", s.mount_point)
            if s.mounted:
                self.devices.umount(s.mount_point)
                done.append(f"unmounted {s.mount_point}")
        old = fstab.read(self.fstab_path)
        if fstab.write_atomic(self.fstab_path, fstab.merge(old, remove=mount_points)):
            done.append("removed fstab entries")
        unmounted_at = times.iso(times.now())
        snap = [(s.mount_point, s.volume_id) for s in plan.to_snapshot if s.volume_id]
        detach = [(s.mount_point, s.volume_id) for s in plan.to_snapshot if s.volume_id and s.attached]
        # Unmounted, nothing writes any more: these snapshots hold every byte, and they are one set.
        made = run_all(lambda mv: self.ec2.create_snapshot(mv[1], plan.description,
                                                           {**plan.snapshot_tags, tags.MOUNT_POINT: mv[0]}), snap)
        done += [f"snapshot {s['SnapshotId']} of {mp}" for (mp, _), s in zip(snap, made)]
        for _, volume_id in detach:
            self.ec2.detach_volume(volume_id)
        if detach:
            waits.until("volumes detached", [vid for _, vid in detach],
                        lambda ids: {v["VolumeId"]: v for v in self.ec2.describe_volumes(volume_ids=ids)},
                        lambda v: v.get("State") == "available", limit=waits.bound(DETACH_WAIT, self.wait_timeout))
            # Marked so the next mount-snapshots restores from the snapshot instead of reattaching a volume the
            # user took away on purpose; the time says which snapshots hold all of its data (`clean volumes`).
            self.ec2.create_tags([vid for _, vid in detach], {tags.DETACHED: unmounted_at})
            done += [f"detached {vid} from {mp}" for mp, vid in detach]
        for s in plan.steps:
            if s.volume_id and s.delete:
                self.ec2.delete_volume(s.volume_id)
                done.append(f"deleted {s.volume_id}")
        self.hooks.after("unmount", mount_points)
        return {"snapshotter": plan.snapshotter, "done": done, "api_calls": dict(self.ec2.calls)}
