"""watch, applying a terminate notice with `reuse_volumes`: unmount and detach the volumes for the replacement.

Unlike unmount-snapshots, the volumes are not tagged `detached`: they are what a replaced instance leaves
behind, and the next mount-snapshots of the snapshotter in this zone reattaches them at once (see
plan/restore.py `reuse_groups`). A file system that does not unmount (still in use) keeps its volume attached:
detaching it would lose what is not written yet; EC2 detaches it when the instance is gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from snaptastic_boot.apply import waits
from snaptastic_boot.apply.hooks import Hooks
from snaptastic_boot.apply.unmount import DETACH_WAIT
from snaptastic_boot.errors import SnaptasticError
from snaptastic_boot.plan.unmount import UnmountPlan
from snaptastic_boot.system.interfaces import DeviceAdapter, Ec2Api

log = logging.getLogger("snaptastic.release")


@dataclass
class Releaser:
    ec2: Ec2Api
    devices: DeviceAdapter
    hooks: Hooks = field(default_factory=Hooks)
    wait_timeout: float | None = None

    def apply(self, plan: UnmountPlan) -> list[str]:
        """The volumes detached; the steps come from plan_unmount (without delete)."""
        mount_points = [s.mount_point for s in plan.steps]
        self.hooks.call_all("pre_unmounts", mount_points)
        detach: list[str] = []
        for s in plan.steps:
            if not (s.volume_id and s.attached):
                continue
            self.hooks.call_one("pre_unmount", s.mount_point)
            if s.mounted:
                try:
                    self.devices.umount(s.mount_point)
                except SnaptasticError as exc:
                    log.error("%s: not released for a replacement, it stays attached until the instance is gone: %s",
                              s.mount_point, exc)
                    continue
            detach.append(s.volume_id)
        for volume_id in detach:
            self.ec2.detach_volume(volume_id)
        if detach:
            waits.until("volumes detached", detach,
                        lambda ids: {v["VolumeId"]: v for v in self.ec2.describe_volumes(volume_ids=ids)},
                        lambda v: v.get("State") == "available", limit=waits.bound(DETACH_WAIT, self.wait_timeout))
            log.info("released %s for a replacement instance", ", ".join(detach))
        self.hooks.after("unmount", mount_points)
        return detach
