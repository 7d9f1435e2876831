"""mount-snapshots: decide per mount point what to restore (plan), then do it (apply).

Planning is pure: it takes the snapshots and volumes EC2 reported and the mounts the system has, and returns a
frozen `RestorePlan`. Applying runs the plan with all volumes of the run in flight together: create all,
wait for all (one DescribeVolumes per poll), attach all, wait for all, then prepare devices in parallel.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from snaptastic_boot import times
from snaptastic_boot.system import fstab
from snaptastic_boot.apply import waits
from snaptastic_boot.system.devices import Devices, Mount
from snaptastic_boot.ec2 import Ec2, tag_filters, tag_list, tags_of
from snaptastic_boot.errors import BadInput, CommandError, UnsafeOperation, WaitTimeout
from snaptastic_boot.model import SnapshotterSpec, VolumeSpec
from snaptastic_boot.system.stopping import GracefulStop, NoStop

log = logging.getLogger("snaptastic.restore")

CREATE = "create"
ATTACH = "attach"
MOUNT = "mount"
MOUNTED = "mounted"

VOLUME_WAIT = 300.0
ATTACH_WAIT = 120.0
DEVICE_WAIT = 60.0
GONE_STATES = ("deleting", "deleted", "error")
# Set by unmount-snapshots on volumes it detached on purpose: never reattached, left for `clean volumes`.
DETACHED_TAG = "detached"


@dataclass(frozen=True)
class SnapshotChoice:
    snapshot_id: str
    start_time: str
    state: str
    volume_size: int


@dataclass(frozen=True)
class VolumeStep:
    mount_point: str
    device: str
    action: str
    spec: VolumeSpec
    volume_id: str | None = None
    snapshot: SnapshotChoice | None = None
    size: int = 0
    format_if_blank: bool = False
    grow: bool = False
    attaching: bool = False

    def describe(self) -> str:
        s = self.spec
        if self.action == MOUNTED:
            what = f"already mounted from {self.volume_id}; nothing to do"
        elif self.action == MOUNT:
            what = f"mount attached volume {self.volume_id}"
        elif self.action == ATTACH:
            what = f"attach existing volume {self.volume_id} at {self.device} and mount"
        elif self.snapshot:
            what = f"create {self.size} GiB {s.volume_type} from {self.snapshot.snapshot_id} ({self.snapshot.start_time})"
        else:
            what = f"create empty {self.size} GiB {s.volume_type}"
        fmt = f"format {s.filesystem} if blank" if self.format_if_blank else "never format"
        return f"{self.mount_point}: {what}; device {self.device}; {fmt}{'; grow filesystem' if self.grow else ''}"


@dataclass(frozen=True)
class RestorePlan:
    snapshotter: str
    instance_id: str
    availability_zone: str
    steps: tuple[VolumeStep, ...]
    tags: dict[str, str]
    wait_pending: tuple[str, ...] = ()
    pending_wait_limit: float = 600.0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for step, raw in zip(self.steps, out["steps"]):
            raw["fstab"] = fstab_preview(step)
        return out

    def render(self) -> str:
        lines = [f"plan for snapshotter '{self.snapshotter}' on {self.instance_id} ({self.availability_zone}):"]
        for step in self.steps:
            lines.append(f"  {step.describe()}")
            lines.append(f"    fstab: {fstab_preview(step)}")
        if self.wait_pending:
            lines.append(f"  wait for pending snapshots: {', '.join(self.wait_pending)}")
        return "\n".join(lines)


def fstab_preview(step: VolumeStep) -> str:
    return fstab.Entry("<filesystem uuid>", step.mount_point, step.spec.filesystem, step.spec.mount_options).line()


# -- deciding ----------------------------------------------------------------------------------------------


def parse_time(value: str) -> dt.datetime:
    parsed = times.parse(value)
    if parsed is None:
        raise BadInput(f"--before: '{value}' is not a timestamp; use ISO 8601 like 2026-11-27T16:00:00Z")
    return parsed




def newest_snapshots(
    snapshots: Sequence[dict[str, Any]], mount_points: Sequence[str], before: dt.datetime | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per mount point: the newest completed snapshot, and a newer pending one if there is one."""
    completed: dict[str, dict[str, Any]] = {}
    pending: dict[str, dict[str, Any]] = {}
    for snap in sorted(snapshots, key=lambda s: (times.start_time(s), s["SnapshotId"])):
        mp = tags_of(snap).get("mount_point")
        if mp not in mount_points or (before is not None and times.start_time(snap) >= before):
            continue
        if snap.get("State") == "completed":
            completed[mp] = snap
            pending.pop(mp, None)
        elif snap.get("State") == "pending":
            pending[mp] = snap
    return completed, pending


def _choice(snap: dict[str, Any]) -> SnapshotChoice:
    return SnapshotChoice(snap["SnapshotId"], times.start_time(snap).isoformat(), snap.get("State", ""), int(snap.get("VolumeSize", 0)))


def plan_restore(
    spec: SnapshotterSpec,
    instance_id: str,
    availability_zone: str,
    snapshots: Sequence[dict[str, Any]],
    our_volumes: Sequence[dict[str, Any]],
    mounts: Sequence[Mount],
    pinned: dict[str, dict[str, Any]] | None = None,
    before: dt.datetime | None = None,
) -> RestorePlan:
    """Decide, per configured volume, whether to keep, mount, attach or create, and from which snapshot."""
    pinned = pinned or {}
    mount_points = [v.mount_point for v in spec.volumes]
    completed, pending = newest_snapshots(snapshots, mount_points, before)
    mounted_at = {m.mount_point: m for m in mounts}
    steps: list[VolumeStep] = []
    wait_pending: list[str] = []
    for v in spec.volumes:
        existing = current_volume(our_volumes, instance_id, v.mount_point, spec.filter_tags)
        if existing is not None:
            attachment = _attachment(existing, instance_id)
            device = attachment["Device"] if attachment else v.device
            empty = not existing.get("SnapshotId")
            if attachment and v.mount_point in mounted_at:
                action = MOUNTED
            elif attachment:
                action = MOUNT
            else:
                action = ATTACH
            steps.append(VolumeStep(v.mount_point, device, action, v, volume_id=existing["VolumeId"],
                                    size=int(existing.get("Size", v.size)), format_if_blank=empty,
                                    attaching=bool(attachment and attachment.get("State") == "attaching")))
            continue
        if v.mount_point in mounted_at:
            m = mounted_at[v.mount_point]
            raise UnsafeOperation(
                f"{v.mount_point} is already mounted from {m.source}, which is not a volume this agent made for "
                f"this instance; unmount it first"
            )
        snap = pinned.get(v.mount_point) or completed.get(v.mount_point)
        if v.mount_point not in pinned and v.mount_point in pending:
            snap = pending[v.mount_point]
            wait_pending.append(snap["SnapshotId"])
        choice = _choice(snap) if snap else None
        size = max(v.size, choice.volume_size) if choice else v.size
        steps.append(VolumeStep(v.mount_point, v.device, CREATE, v, snapshot=choice, size=size,
                                format_if_blank=choice is None, grow=bool(choice and v.size > choice.volume_size)))
    tags = dict(spec.filter_tags)
    return RestorePlan(spec.name, instance_id, availability_zone, tuple(steps), tags, tuple(wait_pending),
                       spec.pending_snapshot_wait)


def _attachment(volume: dict[str, Any], instance_id: str) -> dict[str, Any] | None:
    for att in volume.get("Attachments") or []:
        if att.get("InstanceId") == instance_id and att.get("State") in ("attaching", "attached"):
            return dict(att)
    return None


def current_volume(our_volumes: Sequence[dict[str, Any]], instance_id: str, mount_point: str,
                   filter_tags: dict[str, str]) -> dict[str, Any] | None:
    """This instance's volume for a mount point: the one attached here, else the newest one an interrupted
    run left available. Volumes unmount-snapshots detached on purpose do not count, and neither does
    anything without all of this snapshotter's tags, whatever the server-side filter returned."""
    want = {**filter_tags, "mount_point": mount_point, "instance_id": instance_id}
    volumes = [v for v in our_volumes if all(tags_of(v).get(k) == val for k, val in want.items())
               and v.get("State") not in GONE_STATES and DETACHED_TAG not in tags_of(v)]
    attached = [v for v in volumes if _attachment(v, instance_id)]
    if attached:
        return attached[0]
    available = sorted((v for v in volumes if v.get("State") in ("available", "creating")),
                       key=lambda v: str(v.get("CreateTime", "")))
    return available[-1] if available else None


# -- doing ---------------------------------------------------------------------------------------------------


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


class Restorer:
    def __init__(self, ec2: Ec2, devices: Devices, fstab_path: Path, hooks: Any = None, workers: int = 16,
                 stop: GracefulStop | None = None) -> None:
        self.ec2 = ec2
        self.stop = stop or NoStop()
        self.devices = devices
        self.fstab_path = fstab_path
        self.hooks = hooks
        self.workers = workers
        self._fstypes: dict[str, str] = {}

    def apply(self, plan: RestorePlan, hook_volumes: dict[str, Any] | None = None) -> RestoreReport:
        started = time.monotonic()
        hook_volumes = hook_volumes or {}
        volumes_for_hooks = [hook_volumes[s.mount_point] for s in plan.steps if s.mount_point in hook_volumes]
        self._hook("pre_mounts", volumes_for_hooks)
        for step in plan.steps:
            if step.mount_point in hook_volumes:
                self._hook("pre_mount", hook_volumes[step.mount_point])
        steps = self._wait_for_pending(plan, list(plan.steps)) if plan.wait_pending else list(plan.steps)
        results = {s.mount_point: VolumeResult(s.mount_point, s.volume_id or "", s.device, action=s.action,
                                               snapshot_id=s.snapshot.snapshot_id if s.snapshot else None)
                   for s in steps}
        self.stop.check("waiting for snapshots")
        steps = self._create_all(plan, steps, results)
        self.stop.check("creating volumes")
        self._attach_all(plan, steps)
        self.stop.check("attaching volumes")
        self._mount_all(steps, results)
        changed = self._write_fstab(steps, results)
        for step in plan.steps:
            if step.mount_point in hook_volumes:
                self._hook("post_mount", hook_volumes[step.mount_point])
        self._hook("post_mounts", volumes_for_hooks)
        return RestoreReport(plan.snapshotter, plan.instance_id, [results[s.mount_point] for s in steps],
                             dict(self.ec2.calls), round(time.monotonic() - started, 3), changed)

    # -- phases: each handles every volume of the run together ---------------------------------------------

    def _create_all(self, plan: RestorePlan, steps: list[VolumeStep], results: dict[str, VolumeResult]) -> list[VolumeStep]:
        created = self._create(plan, [s for s in steps if s.action == CREATE])
        for mp, volume_id in created.items():
            results[mp].volume_id = volume_id
        return [replace(s, volume_id=created[s.mount_point]) if s.action == CREATE else s for s in steps]

    def _attach_all(self, plan: RestorePlan, steps: list[VolumeStep]) -> None:
        to_attach = [s for s in steps if s.action in (CREATE, ATTACH)]
        # Attachments an earlier run started and that have not completed yet are waited for with the new ones.
        to_wait = to_attach + [s for s in steps if s.action == MOUNT and s.attaching]
        if to_attach:
            waits.until("volumes available", [s.volume_id or "" for s in to_attach], self._volume_states,
                        lambda v: v["State"] == "available", failed=_volume_failed, label=_labeller(to_attach),
                        limit=waits.timeout(VOLUME_WAIT))
            self.stop.check("waiting for volumes")
            self._parallel(lambda s: self.ec2.attach_volume(s.volume_id or "", plan.instance_id, s.device), to_attach)
        if to_wait:
            waits.until("volumes attached", [s.volume_id or "" for s in to_wait], self._volume_states,
                        lambda v: _attachment_state(v, plan.instance_id) == "attached", failed=_volume_failed,
                        label=_labeller(to_wait), limit=waits.timeout(ATTACH_WAIT))
        if to_attach:
            self.ec2.set_delete_on_termination(plan.instance_id, {s.device: s.spec.delete_on_termination for s in to_attach})

    def _mount_all(self, steps: list[VolumeStep], results: dict[str, VolumeResult]) -> None:
        pending = [s for s in steps if s.action != MOUNTED]
        local = self._wait_for_devices(pending)
        self.stop.check("waiting for block devices")
        self._parallel(lambda s: self._prepare(s, local[s.mount_point], results[s.mount_point]), pending)
        for s in steps:
            if s.action == MOUNTED:
                self._check_mounted(s, results[s.mount_point])

    # -- steps ---------------------------------------------------------------------------------------------

    def _wait_for_pending(self, plan: RestorePlan, steps: list[VolumeStep]) -> list[VolumeStep]:
        log.info("waiting up to %.0fs for pending snapshots %s", plan.pending_wait_limit, ", ".join(plan.wait_pending))

        def fetch(ids: Sequence[str]) -> dict[str, dict[str, Any]]:
            return {s["SnapshotId"]: s for s in self.ec2.describe_snapshots([], snapshot_ids=ids)}

        try:
            done = waits.until("snapshots completed", plan.wait_pending, fetch, lambda s: s.get("State") == "completed",
                               failed=lambda s: "failed" if s.get("State") == "error" else None,
                               limit=plan.pending_wait_limit)
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}; restore an older snapshot with --snapshot MOUNT=SNAP_ID or raise pending_snapshot_wait") from exc
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
            params = create_volume_params(plan, step, created_at, init_rate_ok)
            volume = self.ec2.create_volume(params)
            log.info("created %s for %s (%s)", volume["VolumeId"], step.mount_point,
                     f"from {step.snapshot.snapshot_id}" if step.snapshot else "empty")
            return step.mount_point, volume["VolumeId"]

        return dict(self._parallel(create, steps))

    def _volume_states(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {v["VolumeId"]: v for v in self.ec2.describe_volumes(volume_ids=ids)}

    def _wait_for_devices(self, steps: list[VolumeStep]) -> dict[str, Path]:
        by_volume = {s.volume_id or "": s for s in steps}

        def fetch(ids: Sequence[str]) -> dict[str, Path]:
            found = {}
            for vid in ids:
                path = self.devices.find(vid, by_volume[vid].device)
                if path is not None:
                    found[vid] = path
            return found

        try:
            found = waits.until("block devices", list(by_volume), fetch, lambda _: True, label=_labeller(steps),
                                limit=waits.timeout(DEVICE_WAIT))
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}: the volume is attached in EC2 but no block device appeared; "
                              "check the kernel log; a rerun reuses the volume") from exc
        return {by_volume[vid].mount_point: path for vid, path in found.items()}

    def _prepare(self, step: VolumeStep, path: Path, result: VolumeResult) -> None:
        volume_id = step.volume_id or ""
        self.devices.verify_identity(path, volume_id)
        result.local_device = str(path)
        probe = self.devices.probe(path)
        fstype = probe.fstype
        if probe.blank:
            if not step.format_if_blank:
                raise UnsafeOperation(f"{path} ({volume_id}) restored for {step.mount_point} has no filesystem; "
                                      "refusing to format a volume made from a snapshot")
            log.info("formatting %s (%s) as %s", path, volume_id, step.spec.filesystem)
            self.devices.mkfs(path, step.spec.filesystem, volume_id)
            result.formatted = True
            fstype = step.spec.filesystem
            probe = self.devices.probe(path)
        elif fstype not in ("ext4", "xfs", "ext3", "ext2", "btrfs"):
            what = "data without a known filesystem" if fstype == "unknown-data" else f"a {fstype} filesystem"
            raise UnsafeOperation(f"{path} ({volume_id}) for {step.mount_point} holds {what}; refusing to format or mount it")
        result.uuid = probe.uuid or ""
        options = step.spec.mount_options
        if fstype == "xfs" and probe.uuid and self.devices.xfs_uuid_in_use(probe.uuid):
            options += ",nouuid"
        mount = self.devices.mount_at(step.mount_point)
        if mount is not None:
            if mount.major_minor != self.devices.major_minor(path):
                raise UnsafeOperation(f"{step.mount_point} is already mounted from {mount.source}; unmount it first")
        else:
            hidden = self.devices.entries(step.mount_point)
            if hidden:
                log.warning("%s is not empty (%s); the mount hides those files until it is unmounted",
                            step.mount_point, ", ".join(hidden[:3]) + (", ..." if len(hidden) > 3 else ""))
            log.info("mounting %s (%s) on %s", path, volume_id, step.mount_point)
            self.devices.mount(path, step.mount_point, str(fstype), options)
        if step.grow:
            log.info("growing the filesystem on %s to %d GiB", step.mount_point, step.size)
            try:
                self.devices.grow(path, step.mount_point, str(fstype))
                result.grown = True
            except CommandError as exc:
                # The data is mounted and safe at its old size; a refused grow (online ext4 resize needs
                # CAP_SYS_RESOURCE, which some containers drop) must not fail the boot.
                log.warning("%s: could not grow the filesystem, it keeps its old size: %s", step.mount_point, exc)
        self._fstypes[step.mount_point] = str(fstype)

    def _check_mounted(self, step: VolumeStep, result: VolumeResult) -> None:
        path = self.devices.find(step.volume_id or "", step.device)
        mount = self.devices.mount_at(step.mount_point)
        if path is None or mount is None or mount.major_minor != self.devices.major_minor(path):
            raise UnsafeOperation(f"{step.mount_point} is mounted, but not from {step.volume_id}; unmount it first")
        self.devices.verify_identity(path, step.volume_id or "")
        result.local_device = str(path)
        probe = self.devices.probe(path)
        result.uuid = probe.uuid or ""
        self._fstypes[step.mount_point] = mount.fstype

    def _write_fstab(self, steps: list[VolumeStep], results: dict[str, VolumeResult]) -> bool:
        old = fstab.read(self.fstab_path)
        entries = []
        for s in steps:
            foreign = fstab.foreign_entry_for(old, s.mount_point)
            if foreign:
                log.warning("fstab already has a line for %s that the agent did not write (%s); leaving it, adding none",
                            s.mount_point, foreign.strip())
                continue
            if results[s.mount_point].uuid:
                entries.append(fstab.Entry(results[s.mount_point].uuid, s.mount_point, self._fstypes[s.mount_point],
                                           s.spec.mount_options))
        return fstab.write_atomic(self.fstab_path, fstab.merge(old, add=entries))

    # -- helpers -------------------------------------------------------------------------------------------

    def _parallel(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            futures = [pool.submit(fn, i) for i in items]
            errors = []
            out = []
            for f in futures:
                try:
                    out.append(f.result())
                except Exception as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
            return out

    def _hook(self, name: str, arg: Any) -> None:
        if self.hooks is not None:
            getattr(self.hooks, name)(arg)


def _labeller(steps: Sequence[VolumeStep]) -> Any:
    names = {s.volume_id: f"{s.volume_id} ({s.device} for {s.mount_point})" for s in steps}
    return lambda vid: names.get(vid, vid)


def _attachment_state(volume: dict[str, Any], instance_id: str) -> str:
    for att in volume.get("Attachments") or []:
        if att.get("InstanceId") == instance_id:
            return str(att.get("State", ""))
    return ""


def _volume_failed(volume: dict[str, Any]) -> str | None:
    if volume.get("State") in GONE_STATES:
        return f"is {volume['State']}"
    return None


def create_volume_params(plan: RestorePlan, step: VolumeStep, created_at: str, init_rate_ok: bool) -> dict[str, Any]:
    s = step.spec
    tags = {**plan.tags, "mount_point": step.mount_point, "instance_id": plan.instance_id, "created": created_at}
    params: dict[str, Any] = {
        "AvailabilityZone": plan.availability_zone,
        "Size": step.size,
        "VolumeType": s.volume_type,
        # Unique per run and mount point: a retried call returns the same volume; a later run finds it by tags.
        "ClientToken": f"snaptastic-{plan.run_id}-{uuid.uuid5(uuid.NAMESPACE_URL, step.mount_point).hex[:16]}",
        "TagSpecifications": [{"ResourceType": "volume", "Tags": tag_list(tags)}],
    }
    if step.snapshot:
        params["SnapshotId"] = step.snapshot.snapshot_id
    if s.iops is not None:
        params["Iops"] = s.iops
    if s.throughput is not None:
        params["Throughput"] = s.throughput
    if s.encrypted:
        params["Encrypted"] = True
    if s.kms_key_id:
        params["KmsKeyId"] = s.kms_key_id
    if s.initialization_rate and step.snapshot:
        if init_rate_ok:
            params["VolumeInitializationRate"] = s.initialization_rate
        else:
            log.warning("%s: initialization_rate needs a newer boto3; creating the volume without it", step.mount_point)
    return params


def our_volume_filters(spec: SnapshotterSpec, instance_id: str) -> list[dict[str, Any]]:
    """This snapshotter's volumes for this instance: its filter tags, our instance_id and its mount points."""
    return tag_filters({**spec.filter_tags, "instance_id": instance_id, "mount_point": [v.mount_point for v in spec.volumes]})


def snapshot_filters(spec: SnapshotterSpec) -> list[dict[str, Any]]:
    return tag_filters({**spec.filter_tags, "mount_point": [v.mount_point for v in spec.volumes]})


def check_pinned(spec: SnapshotterSpec, pins: dict[str, str], found: Sequence[dict[str, Any]], force: bool) -> dict[str, dict[str, Any]]:
    """Pinned snapshots must exist, be completed and (unless forced) carry this snapshotter's tags."""
    by_id = {s["SnapshotId"]: s for s in found}
    configured = {v.mount_point for v in spec.volumes}
    out: dict[str, dict[str, Any]] = {}
    for mp, snap_id in pins.items():
        if mp not in configured:
            raise BadInput(f"--snapshot: {mp} is not a mount point of snapshotter '{spec.name}' ({', '.join(sorted(configured))})")
        snap = by_id.get(snap_id)
        if snap is None:
            raise BadInput(f"--snapshot: {snap_id} not found among this account's snapshots")
        if snap.get("State") != "completed":
            raise BadInput(f"--snapshot: {snap_id} is {snap.get('State')}, not completed")
        tags = tags_of(snap)
        wrong = {k: tags.get(k) for k, v in spec.filter_tags.items() if tags.get(k) != v}
        if wrong and not force:
            shown = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
            raise BadInput(f"--snapshot: {snap_id} belongs elsewhere ({shown}); add --force to restore it anyway")
        out[mp] = snap
    return out


def parse_pins(values: Sequence[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for value in values:
        mp, sep, snap = value.partition("=")
        if not sep or not mp.startswith("/") or not snap.startswith("snap-"):
            raise BadInput(f"--snapshot: '{value}' must look like /mnt/solr=snap-0123456789abcdef0")
        pins[mp.rstrip("/") or "/"] = snap
    return pins

