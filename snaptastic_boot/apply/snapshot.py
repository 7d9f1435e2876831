"""make-snapshots, applying: check the devices, run the hooks, freeze all, snapshot in one call, thaw.

One CreateSnapshots call covers every volume (crash-consistent across volumes, and the freeze stays one API
round trip wide whatever their number).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from snaptastic_boot import messages, tags
from snaptastic_boot.apply import waits
from snaptastic_boot.apply.freeze import frozen
from snaptastic_boot.apply.hooks import Hooks
from snaptastic_boot.errors import AwsError, BadInput, OperationFailed
from snaptastic_boot.plan.snapshot import SnapshotPlan, block_devices
from snaptastic_boot.system.interfaces import DeviceAdapter, Ec2Api
from snaptastic_boot.tunables import DEFAULT_MAX_FREEZE

log = logging.getLogger("snaptastic.snapshots")

# CreateSnapshots can be refused by policy or unsupported; then each volume gets CreateSnapshot.
FALLBACK_CODES = ("UnauthorizedOperation", "AccessDenied", "UnsupportedOperation", "InvalidParameterCombination",
                  "OperationNotPermitted")
SNAPSHOT_WAIT = 3600.0


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


def local_devices(devices: DeviceAdapter, instance: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """volume id -> (local device path, major:minor) for the attached volumes whose device is present."""
    out = {}
    for dev, vid in block_devices(instance):
        path = devices.find(vid, dev)
        if path is not None:
            out[vid] = (str(path), devices.major_minor(path))
    return out


@dataclass
class SnapshotMaker:
    ec2: Ec2Api
    devices: DeviceAdapter
    hooks: Hooks = field(default_factory=Hooks)
    max_freeze: float = DEFAULT_MAX_FREEZE
    wait_timeout: float | None = None
    expedite_freeze: bool = True

    def apply(self, plan: SnapshotPlan, wait: bool = False) -> SnapshotReport:
        if not plan.targets:
            raise BadInput(messages.nothing_to_snapshot(plan.snapshotter))
        mount_points = [t.mount_point for t in plan.targets]
        for t in plan.targets:
            # The device must still be the volume the snapshot is going to be of.
            self.devices.verify_identity(Path(t.local_device), t.volume_id)
        untagged = [t.volume_id for t in plan.targets if t.missing_tags]
        if untagged:
            # Tags copied from such a volume would not let the next boot find its snapshot, and the agent
            # does not retag volumes it did not make: each snapshot gets its tags explicitly instead.
            log.warning("volumes %s lack this snapshotter's tags; taking one snapshot per volume with explicit tags",
                        ", ".join(untagged))
        self.hooks.before("snapshot", mount_points)
        # botocore builds an operation's model on its first call; not while the filesystems are frozen.
        self.ec2.prepare("CreateSnapshot" if untagged else "CreateSnapshots", "CreateSnapshot")
        api_started = api_done = 0.0
        with frozen(mount_points if plan.freeze else [], self.devices.freeze, self.devices.thaw, self.max_freeze,
                    flush=self.devices.flush, expedite=self.expedite_freeze) as window:
            api_started = time.monotonic()
            made, fallback = self._take(plan, per_volume=bool(untagged), answered=window.thaw)
            api_done = time.monotonic()
        by_volume = {s["VolumeId"]: s["SnapshotId"] for s in made}
        result = {t.mount_point: by_volume[t.volume_id] for t in plan.targets if t.volume_id in by_volume}
        lost = [t.mount_point for t in plan.targets if t.volume_id not in by_volume]
        if lost:
            raise OperationFailed(messages.no_snapshot_returned(lost))
        for t in plan.targets:
            log.info("snapshot %s of %s (%s)", result[t.mount_point], t.mount_point, t.volume_id)
        self.hooks.after("snapshot", mount_points)
        if wait:
            waits.until("snapshots completed", list(result.values()),
                        lambda ids: {s["SnapshotId"]: s for s in self.ec2.describe_snapshots([], snapshot_ids=ids)},
                        lambda s: s.get("State") == "completed", failed=waits.snapshot_failed,
                        limit=waits.bound(SNAPSHOT_WAIT, self.wait_timeout))
        return SnapshotReport(plan.snapshotter, result, round(window.max_ms, 1), round(window.blocked_ms, 1),
                              round((api_done - api_started) * 1000, 1),
                              window.watchdog_fired, fallback, dict(self.ec2.calls))

    def _take(self, plan: SnapshotPlan, per_volume: bool,
              answered: Callable[[], None]) -> tuple[list[dict[str, Any]], bool]:
        """The snapshots, in one CreateSnapshots call unless that cannot be used; and whether it was not. Once
        EC2 has accepted that one call, `answered` thaws (the per-volume fallback keeps the freeze to the end)."""
        if not per_volume:
            try:
                return self.ec2.create_snapshots(plan.instance_id, plan.exclude_volume_ids, plan.tags, plan.description,
                                                 answered=answered), False
            except AwsError as exc:
                if exc.code not in FALLBACK_CODES:
                    raise
                log.warning("CreateSnapshots refused (%s); taking one snapshot per volume", exc.code)
        made = [self.ec2.create_snapshot(t.volume_id, plan.description, {**plan.tags, tags.MOUNT_POINT: t.mount_point})
                for t in plan.targets]
        return made, True
