"""mount-snapshots, applying: carry out a `RestorePlan` with all volumes of the run in flight together.

Create all, wait for all (one DescribeVolumes per poll), attach all, wait for all, then find, check, format
(only a blank volume the agent made empty), mount and grow each device in parallel, and write fstab once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from snaptastic_boot import messages, tags, times
from snaptastic_boot.apply import waits
from snaptastic_boot.apply.hooks import Hooks
from snaptastic_boot.apply.parallel import run_all
from snaptastic_boot.errors import AwsError, CommandError, OperationFailed, UnsafeOperation, WaitTimeout
from snaptastic_boot.model import attachment_state, needs_grow
from snaptastic_boot.plan.restore import Action, RestorePlan, SnapshotChoice, VolumeStep, create_volume_params
from snaptastic_boot.system import fstab
from snaptastic_boot.system.interfaces import DeviceAdapter, Ec2Api
from snaptastic_boot.system.stopping import GracefulStop, NoStop

log = logging.getLogger("snaptastic.restore")

VOLUME_WAIT = 300.0
ATTACH_WAIT = 120.0
DEVICE_WAIT = 60.0
MOUNTABLE = ("ext4", "xfs", "ext3", "ext2", "btrfs")
# AttachVolume's answers when another instance attached the volume first.
LOST_RACE = ("VolumeInUse", "IncorrectState", "InvalidVolume.NotFound")


@dataclass(frozen=True)
class Work:
    """A step whose volume exists: from here on it always has a volume id."""

    step: VolumeStep
    volume_id: str

    @property
    def mount_point(self) -> str:
        return self.step.mount_point

    @property
    def label(self) -> str:
        return f"{self.volume_id} ({self.step.device} for {self.step.mount_point})"


@dataclass
class VolumeResult:
    mount_point: str
    volume_id: str
    device: str
    local_device: str = ""
    action: str = ""
    snapshot_id: str | None = None
    formatted: bool = False
    grown: bool = False
    uuid: str = ""


@dataclass
class RestoreReport:
    snapshotter: str
    instance_id: str
    volumes: list[VolumeResult]
    api_calls: dict[str, int]
    seconds: float
    fstab_changed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Restorer:
    ec2: Ec2Api
    devices: DeviceAdapter
    fstab_path: Path
    hooks: Hooks = field(default_factory=Hooks)
    stop: GracefulStop = field(default_factory=NoStop)
    wait_timeout: float | None = None
    _fstypes: dict[str, str] = field(default_factory=dict, init=False)

    def apply(self, plan: RestorePlan) -> RestoreReport:
        started = time.monotonic()
        mount_points = [s.mount_point for s in plan.steps]
        self.hooks.before("mount", mount_points)
        taken = self._take_leftovers(plan) if plan.reuse else None
        if taken is not None:
            steps = list(taken)
        else:
            steps = self._wait_for_pending(plan, list(plan.steps)) if plan.wait_pending else list(plan.steps)
        results = {s.mount_point: VolumeResult(s.mount_point, s.volume_id or "", s.device, action=s.action.value,
                                               snapshot_id=s.snapshot.snapshot_id if s.snapshot else None)
                   for s in steps}
        self.stop.check("waiting for snapshots")
        work = self._create_all(plan, steps, results)
        self.stop.check("creating volumes")
        self._attach_all(plan, work)
        self.stop.check("attaching volumes")
        self._mount_all(work, results)
        changed = self._write_fstab(work, results)
        self.hooks.after("mount", mount_points)
        return RestoreReport(plan.snapshotter, plan.instance_id, [results[w.mount_point] for w in work],
                             dict(self.ec2.calls), round(time.monotonic() - started, 3), changed)

    # -- phases: each handles every volume of the run together ---------------------------------------------

    def _create_all(self, plan: RestorePlan, steps: list[VolumeStep], results: dict[str, VolumeResult]) -> list[Work]:
        created = self._create(plan, [s for s in steps if s.action == Action.CREATE])
        for mp, volume_id in created.items():
            results[mp].volume_id = volume_id
        return [Work(s, created[s.mount_point] if s.action == Action.CREATE else s.volume_id or "") for s in steps]

    def _take_leftovers(self, plan: RestorePlan) -> tuple[VolumeStep, ...] | None:
        """Attach the first group of volumes a replaced instance left that this run can take whole; None when
        other agents took them all first (the snapshots are used then)."""
        for group in plan.reuse:
            attached: list[VolumeStep] = []
            try:
                for step in group:  # one at a time, in the plan's order: two racing agents fight over the first
                    self.ec2.attach_volume(step.volume_id or "", plan.instance_id, step.device)
                    attached.append(step)
            except AwsError as exc:
                if exc.code not in LOST_RACE:
                    self._give_back(attached)
                    raise
                log.warning("%s was taken by another instance first (%s); %s", step.volume_id, exc.code,
                            "trying the next volumes left behind" if group is not plan.reuse[-1] else "restoring from snapshots")
                self._give_back(attached)
                continue
            ids = [s.volume_id or "" for s in group]
            self.ec2.create_tags(ids, {tags.INSTANCE_ID: plan.instance_id})
            log.info("reattached %s, left by a replaced instance", ", ".join(f"{s.volume_id} for {s.mount_point}" for s in group))
            return group
        return None

    def _give_back(self, attached: list[VolumeStep]) -> None:
        """Undo this run's part of a group it could not take whole, so that the winner can have it."""
        for step in attached:
            self.ec2.detach_volume(step.volume_id or "")
        if attached:
            waits.until("volumes given back", [s.volume_id or "" for s in attached], self._volume_states,
                        lambda v: v["State"] == "available", limit=waits.bound(ATTACH_WAIT, self.wait_timeout))

    def _attach_all(self, plan: RestorePlan, work: list[Work]) -> None:
        to_attach = [w for w in work if w.step.action in (Action.CREATE, Action.ATTACH)]
        reattached = [w for w in work if w.step.action == Action.REATTACH]
        # Attachments an earlier run started and that have not completed yet are waited for with the new ones.
        to_wait = to_attach + reattached + [w for w in work if w.step.action == Action.AWAIT_ATTACHMENT]
        if to_attach:
            waits.until("volumes available", [w.volume_id for w in to_attach], self._volume_states,
                        lambda v: v["State"] == "available", failed=waits.volume_gone, label=_labeller(to_attach),
                        limit=waits.bound(VOLUME_WAIT, self.wait_timeout))
            self.stop.check("waiting for volumes")
            run_all(lambda w: self.ec2.attach_volume(w.volume_id, plan.instance_id, w.step.device), to_attach)
        if to_wait:
            waits.until("volumes attached", [w.volume_id for w in to_wait], self._volume_states,
                        lambda v: attachment_state(v, plan.instance_id) == "attached", failed=waits.volume_gone,
                        label=_labeller(to_wait), limit=waits.bound(ATTACH_WAIT, self.wait_timeout))
        flagged = to_attach + reattached + [w for w in work if w.step.set_delete_on_termination]
        if flagged:
            self.ec2.set_delete_on_termination(plan.instance_id, {w.step.device: w.step.spec.delete_on_termination
                                                                  for w in flagged})

    def _mount_all(self, work: list[Work], results: dict[str, VolumeResult]) -> None:
        pending = [w for w in work if w.step.action != Action.MOUNTED]
        local = self._wait_for_devices(pending)
        self.stop.check("waiting for block devices")
        run_all(lambda w: self._prepare(w, local[w.mount_point], results[w.mount_point]), pending)
        for w in work:
            if w.step.action == Action.MOUNTED:
                self._check_mounted(w, results[w.mount_point])

    # -- steps ---------------------------------------------------------------------------------------------

    def _wait_for_pending(self, plan: RestorePlan, steps: list[VolumeStep]) -> list[VolumeStep]:
        log.info("waiting up to %.0fs for pending snapshots %s", plan.pending_wait_limit, ", ".join(plan.wait_pending))

        def fetch(ids: Sequence[str]) -> dict[str, dict[str, Any]]:
            return {s["SnapshotId"]: s for s in self.ec2.describe_snapshots([], snapshot_ids=ids)}

        try:
            done = waits.until("snapshots completed", plan.wait_pending, fetch, lambda s: s.get("State") == "completed",
                               failed=waits.snapshot_failed, limit=plan.pending_wait_limit)
        except WaitTimeout as exc:
            raise WaitTimeout(messages.pending_snapshot_timeout(exc)) from exc
        except OperationFailed as exc:
            if not plan.fallback:
                raise
            # The newest set failed while we waited: the previous complete set, whole, as planned.
            log.warning("%s; restoring the previous complete snapshot set instead: %s", exc,
                        "; ".join(s.describe() for s in plan.fallback))
            instead = {s.mount_point: s for s in plan.fallback}
            return [instead.get(s.mount_point, s) for s in steps]
        out = []
        for s in steps:
            if s.snapshot and s.snapshot.snapshot_id in done:
                snap = done[s.snapshot.snapshot_id]
                choice = SnapshotChoice(s.snapshot.snapshot_id, s.snapshot.start_time, "completed", int(snap.get("VolumeSize", 0)))
                s = replace(s, snapshot=choice)
            out.append(s)
        return out

    def _create(self, plan: RestorePlan, steps: list[VolumeStep]) -> dict[str, str]:
        if not steps:
            return {}
        init_rate_ok = self.ec2.supports_initialization_rate()
        created_at = times.iso(times.now())

        def create(step: VolumeStep) -> tuple[str, str]:
            volume = self.ec2.create_volume(create_volume_params(plan, step, created_at, init_rate_ok))
            log.info("created %s for %s (%s)", volume["VolumeId"], step.mount_point,
                     f"from {step.snapshot.snapshot_id}" if step.snapshot else "empty")
            return step.mount_point, volume["VolumeId"]

        return dict(run_all(create, steps))

    def _volume_states(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {v["VolumeId"]: v for v in self.ec2.describe_volumes(volume_ids=ids)}

    def _wait_for_devices(self, work: list[Work]) -> dict[str, Path]:
        by_volume = {w.volume_id: w for w in work}

        def fetch(ids: Sequence[str]) -> dict[str, Path]:
            found = {}
            for vid in ids:
                path = self.devices.find(vid, by_volume[vid].step.device)
                if path is not None:
                    found[vid] = path
            return found

        try:
            found = waits.until("block devices", list(by_volume), fetch, lambda _: True, label=_labeller(work),
                                limit=waits.bound(DEVICE_WAIT, self.wait_timeout))
        except WaitTimeout as exc:
            raise WaitTimeout(messages.no_block_device(exc)) from exc
        return {by_volume[vid].mount_point: path for vid, path in found.items()}

    def _prepare(self, work: Work, path: Path, result: VolumeResult) -> None:
        step, volume_id = work.step, work.volume_id
        self.devices.verify_identity(path, volume_id)
        result.local_device = str(path)
        probe = self.devices.probe(path)
        fstype = probe.fstype
        if probe.blank:
            if not step.format_if_blank:
                raise UnsafeOperation(messages.restored_without_filesystem(path, volume_id, step.mount_point))
            log.info("formatting %s (%s) as %s", path, volume_id, step.spec.filesystem)
            self.devices.mkfs(path, step.spec.filesystem, volume_id)
            result.formatted = True
            fstype = step.spec.filesystem
            probe = self.devices.probe(path)
        elif fstype not in MOUNTABLE:
            raise UnsafeOperation(messages.unknown_contents(path, volume_id, step.mount_point, str(fstype)))
        result.uuid = probe.uuid or ""
        options = step.spec.mount_options
        if fstype == "xfs" and probe.uuid and self.devices.xfs_uuid_in_use(probe.uuid):
            options += ",nouuid"
        mount = self.devices.mount_at(step.mount_point)
        if mount is not None:
            if mount.major_minor != self.devices.major_minor(path):
                raise UnsafeOperation(messages.mounted_from_elsewhere(step.mount_point, mount.source))
        else:
            hidden = self.devices.entries(step.mount_point)
            if hidden:
                log.warning("%s is not empty (%s); the mount hides those files until it is unmounted",
                            step.mount_point, ", ".join(hidden[:3]) + (", ..." if len(hidden) > 3 else ""))
            log.info("mounting %s (%s) on %s", path, volume_id, step.mount_point)
            try:
                self.devices.mount(path, step.mount_point, str(fstype), options)
            except CommandError:
                if fstype != "xfs" or "nouuid" in options.split(","):
                    raise
                # A twin with the same UUID may be mounted where this mount table does not show it (another
                # mount namespace: a container, a copy made while it was mounted here); xfs refuses it then.
                log.warning("%s: mounting %s failed; mounting again with nouuid, in case a copy of this xfs is "
                            "mounted out of sight", step.mount_point, volume_id)
                self.devices.mount(path, step.mount_point, str(fstype), options + ",nouuid")
        self._grow_if_smaller(work, path, str(fstype), result)
        self._fstypes[step.mount_point] = str(fstype)

    def _check_mounted(self, work: Work, result: VolumeResult) -> None:
        step = work.step
        path = self.devices.find(work.volume_id, step.device)
        mount = self.devices.mount_at(step.mount_point)
        if path is None or mount is None or mount.major_minor != self.devices.major_minor(path):
            raise UnsafeOperation(messages.mounted_not_from(step.mount_point, work.volume_id))
        self.devices.verify_identity(path, work.volume_id)
        result.local_device = str(path)
        result.uuid = self.devices.probe(path).uuid or ""
        self._fstypes[step.mount_point] = mount.fstype
        self._grow_if_smaller(work, path, mount.fstype, result)

    def _grow_if_smaller(self, work: Work, path: Path, fstype: str, result: VolumeResult) -> None:
        """Grow a filesystem smaller than its volume: one restored to a larger size, or one whose earlier grow
        was refused, whatever run finds it."""
        mp = work.mount_point
        if not needs_grow(self.devices.fs_size(path, mp, fstype), self.devices.device_size(path)):
            return
        log.info("growing the filesystem on %s to fill %s", mp, work.volume_id)
        try:
            self.devices.grow(path, mp, fstype)
            result.grown = True
        except CommandError as exc:
            # The data is mounted and safe at its old size; a refused grow (online ext4 resize needs
            # CAP_SYS_RESOURCE, which some containers drop) must not fail the boot. The next run tries again.
            log.warning("%s: could not grow the filesystem, it keeps its old size until a later run grows it: %s", mp, exc)

    def _write_fstab(self, work: list[Work], results: dict[str, VolumeResult]) -> bool:
        old = fstab.read(self.fstab_path)
        entries = []
        for w in work:
            mp, spec = w.mount_point, w.step.spec
            foreign = fstab.foreign_entry_for(old, mp)
            if foreign:
                log.warning("fstab already has a line for %s that the agent did not write (%s); leaving it, adding none",
                            mp, foreign.strip())
                continue
            if results[mp].uuid:
                entries.append(fstab.Entry(results[mp].uuid, mp, self._fstypes[mp], spec.mount_options))
        return fstab.write_atomic(self.fstab_path, fstab.merge(old, add=entries))


def _labeller(work: Sequence[Work]) -> Callable[[str], str]:
    names = {w.volume_id: w.label for w in work}
    return lambda vid: names.get(vid, vid)
