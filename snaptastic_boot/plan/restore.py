"""mount-snapshots, deciding: per mount point, keep, mount, attach or create, and from which snapshot.

Pure: it takes the snapshots and volumes EC2 reported and the mounts the system has, and returns a frozen
`RestorePlan` (`apply.restore` carries it out). It also builds the EC2 requests the plan implies.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from snaptastic_boot import messages, tags, times
from snaptastic_boot.errors import BadInput, OperationFailed, UnsafeOperation
from snaptastic_boot.model import GONE_STATES, Mount, SnapshotterSpec, VolumeSpec, attachment, canonical_device
from snaptastic_boot.plan import sets

log = logging.getLogger("snaptastic.restore")


class Action(str, Enum):
    """What happens to one mount point; the value is what --json shows."""

    CREATE = "create"  # a new volume, from a snapshot or empty
    ATTACH = "attach"  # our volume is available (an interrupted run left it): attach it
    AWAIT_ATTACHMENT = "await-attachment"  # an earlier run's attachment is still in progress: wait for it
    MOUNT = "mount"  # attached, not mounted
    MOUNTED = "mounted"  # nothing to do
    REATTACH = "reattach"  # a volume a replaced instance left behind: attach it as it is, retag it ours

    def __str__(self) -> str:
        return self.value


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
    action: Action
    spec: VolumeSpec
    volume_id: str | None = None  # None only for CREATE, until the volume exists
    snapshot: SnapshotChoice | None = None
    size: int = 0
    format_if_blank: bool = False
    grow: bool = False
    # An earlier run attached the volume and ended before it set DeleteOnTermination as configured.
    set_delete_on_termination: bool = False

    def describe(self) -> str:
        s = self.spec
        if self.action == Action.MOUNTED:
            what = f"already mounted from {self.volume_id}; nothing to do"
        elif self.action == Action.MOUNT:
            what = f"mount attached volume {self.volume_id}"
        elif self.action == Action.AWAIT_ATTACHMENT:
            what = f"wait for the attachment of {self.volume_id} an earlier run started, then mount"
        elif self.action == Action.ATTACH:
            what = f"attach existing volume {self.volume_id} at {self.device} and mount"
        elif self.action == Action.REATTACH:
            what = f"reattach {self.volume_id}, left by a replaced instance, at {self.device} and mount"
        elif self.snapshot:
            what = f"create {self.size} GiB {s.volume_type} from {self.snapshot.snapshot_id} ({self.snapshot.start_time})"
        else:
            what = f"create empty {self.size} GiB {s.volume_type}"
        fmt = f"format {s.filesystem} if blank" if self.format_if_blank else "never format"
        flag = f"; set DeleteOnTermination {s.delete_on_termination}" if self.set_delete_on_termination else ""
        return f"{self.mount_point}: {what}; device {self.device}; {fmt}{'; grow filesystem' if self.grow else ''}{flag}"


@dataclass(frozen=True)
class RestorePlan:
    snapshotter: str
    instance_id: str
    availability_zone: str
    steps: tuple[VolumeStep, ...]
    tags: dict[str, str]
    wait_pending: tuple[str, ...] = ()
    pending_wait_limit: float = 600.0
    snapshot_set: str | None = None
    # The steps to take instead, by mount point, if a pending set being waited for fails: the previous set.
    fallback: tuple[VolumeStep, ...] = ()
    notes: tuple[str, ...] = ()
    # Groups of volumes replaced instances left, one per instance, newest first; tried before `steps` create.
    reuse: tuple[tuple[VolumeStep, ...], ...] = ()
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def as_dict(self, fstab_line: Callable[[VolumeStep], str] | None = None) -> dict[str, Any]:
        out = asdict(self)
        for step, raw in zip(self.steps, out["steps"]):
            raw["action"] = step.action.value
            if fstab_line is not None:
                raw["fstab"] = fstab_line(step)
        for step, raw in zip(self.fallback, out["fallback"]):
            raw["action"] = step.action.value
        for group, raws in zip(self.reuse, out["reuse"]):
            for step, raw in zip(group, raws):
                raw["action"] = step.action.value
        return out

    def render(self, fstab_line: Callable[[VolumeStep], str] | None = None) -> str:
        lines = [f"plan for snapshotter '{self.snapshotter}' on {self.instance_id} ({self.availability_zone}):"]
        for step in self.steps:
            lines.append(f"  {step.describe()}")
            if fstab_line is not None:
                lines.append(f"    fstab: {fstab_line(step)}")
        if self.snapshot_set:
            lines.append(f"  snapshot set: {self.snapshot_set}")
        if self.wait_pending:
            lines.append(f"  wait for pending snapshots: {', '.join(self.wait_pending)}")
        if self.fallback:
            lines.append(f"  if they fail: {'; '.join(s.describe() for s in self.fallback)}")
        for group in self.reuse:
            lines.append(f"  first try: {'; '.join(s.describe() for s in group)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- deciding ----------------------------------------------------------------------------------------------


def parse_time(value: str) -> dt.datetime:
    parsed = times.parse(value)
    if parsed is None:
        raise BadInput(messages.bad_before(value))
    return parsed




def newest_snapshots(
    snapshots: Sequence[dict[str, Any]], mount_points: Sequence[str], before: dt.datetime | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per mount point: the newest completed snapshot, and a newer pending one if there is one."""
    completed: dict[str, dict[str, Any]] = {}
    pending: dict[str, dict[str, Any]] = {}
    for snap in sorted(snapshots, key=lambda s: (times.start_time(s), s["SnapshotId"])):
        mp = tags.tags_of(snap).get(tags.MOUNT_POINT)
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


@dataclass(frozen=True)
class Sources:
    """Where each mount point's new volume comes from, decided for the snapshotter as a whole."""

    snapshots: dict[str, dict[str, Any]]  # mount point -> snapshot (completed, or pending and waited for)
    wait_for: tuple[str, ...] = ()
    fallback: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot_set: str | None = None
    notes: tuple[str, ...] = ()
    # Mount points that sets cover but no set can restore: an error, but only if a volume must be created.
    unrestorable: tuple[str, ...] = ()


def choose_sources(spec: SnapshotterSpec, snapshots: Sequence[dict[str, Any]], pinned: dict[str, dict[str, Any]],
                   before: dt.datetime | None = None) -> Sources:
    """The newest complete snapshot set for the mount points sets cover; for the others (old snaptastic
    snapshots, a mount point added to the config later, or `consistent_restore` off) each one's own newest
    snapshot. Pins override either, and say so when they break a set."""
    mount_points = [v.mount_point for v in spec.volumes]
    notes: list[str] = []
    out: dict[str, dict[str, Any]] = {}
    wait_for: list[str] = []
    fallback: dict[str, dict[str, Any]] = {}
    chosen_set: str | None = None
    unrestorable: tuple[str, ...] = ()
    independent = list(mount_points)
    if spec.consistent_restore:
        choice = sets.choose(snapshots, mount_points, before)
        base = choice.waiting_for or choice.chosen
        used = base.describe() if base else "no set"
        notes += [f"skipping {s.describe()}: {why}; using {used}" for s, why in choice.skipped]
        independent = [mp for mp in mount_points if mp not in choice.must_cover]
        if base is not None:
            chosen_set = base.set_id
            out.update(base.members)
            if choice.waiting_for is not None:
                wait_for = [s["SnapshotId"] for s in base.members.values() if s.get("State") == sets.PENDING]
                if choice.chosen is not None:
                    fallback = dict(choice.chosen.members)
        else:
            unrestorable = choice.must_cover
        if choice.must_cover:
            for mp in independent:
                notes.append(f"{mp}: no snapshot set covers it (added to the config later?); it gets its own newest "
                             "snapshot or an empty volume")
    completed, pending = newest_snapshots(snapshots, independent, before)
    for mp in independent:
        if mp in pending:
            out[mp] = pending[mp]
            wait_for.append(pending[mp]["SnapshotId"])
        elif mp in completed:
            out[mp] = completed[mp]
    for mp, snap in pinned.items():
        if chosen_set and mp not in independent:
            notes.append(f"{mp}: pinned to {snap['SnapshotId']}, which breaks snapshot set {chosen_set}: the mount "
                         "points may come from different points in time")
        if mp in out and out[mp]["SnapshotId"] in wait_for:
            wait_for.remove(out[mp]["SnapshotId"])
        out[mp] = snap
        fallback.pop(mp, None)
    return Sources(out, tuple(wait_for), fallback if wait_for else {}, chosen_set, tuple(notes),
                   tuple(mp for mp in unrestorable if mp not in pinned))


def plan_restore(
    spec: SnapshotterSpec,
    instance_id: str,
    availability_zone: str,
    snapshots: Sequence[dict[str, Any]],
    our_volumes: Sequence[dict[str, Any]],
    mounts: Sequence[Mount],
    pinned: dict[str, dict[str, Any]] | None = None,
    before: dt.datetime | None = None,
    occupied: dict[str, str] | None = None,
    leftovers: Sequence[dict[str, Any]] = (),
    delete_on_termination: dict[str, bool] | None = None,
) -> RestorePlan:
    """Decide, per configured volume, whether to keep, mount, attach or create, and from which snapshot.
    `occupied` maps the instance's attachment points (canonical device names) to the volumes in them;
    `delete_on_termination` their volumes to DeleteOnTermination, as the instance's block device mapping says."""
    sources = choose_sources(spec, snapshots, pinned or {}, before)
    occupied = occupied or {}
    mounted_at = {m.mount_point: m for m in mounts}
    steps: list[VolumeStep] = []
    fallback: list[VolumeStep] = []
    for v in spec.volumes:
        existing = current_volume(our_volumes, instance_id, v.mount_point, spec.filter_tags)
        if existing is not None:
            att = attachment(existing, instance_id)
            device = att["Device"] if att else v.device
            if att and v.mount_point in mounted_at:
                action = Action.MOUNTED
            elif att and att.get("State") == "attaching":
                action = Action.AWAIT_ATTACHMENT
            elif att:
                action = Action.MOUNT
            else:
                action = Action.ATTACH
            if action == Action.ATTACH:
                _check_free(v.mount_point, device, existing["VolumeId"], occupied)
            flag = (delete_on_termination or {}).get(existing["VolumeId"])
            steps.append(VolumeStep(v.mount_point, device, action, v, volume_id=existing["VolumeId"],
                                    size=int(existing.get("Size", v.size)),
                                    format_if_blank=not existing.get("SnapshotId"),
                                    set_delete_on_termination=action in (Action.MOUNT, Action.AWAIT_ATTACHMENT)
                                    and flag is not None and flag != v.delete_on_termination))
            continue
        if v.mount_point in mounted_at:
            m = mounted_at[v.mount_point]
            raise UnsafeOperation(messages.mounted_not_ours(v.mount_point, m.source))
        _check_free(v.mount_point, v.device, None, occupied)
        if v.mount_point in sources.unrestorable:
            raise OperationFailed(messages.no_complete_set(v.mount_point, spec.name))
        steps.append(_create(v, sources.snapshots.get(v.mount_point)))
        if v.mount_point in sources.fallback:
            fallback.append(_create(v, sources.fallback[v.mount_point]))
    wait_for = tuple(i for i in sources.wait_for if any(s.snapshot and s.snapshot.snapshot_id == i for s in steps))
    reuse: tuple[tuple[VolumeStep, ...], ...] = ()
    notes = sources.notes
    if spec.reuse_volumes:
        if all(s.action == Action.CREATE for s in steps):
            reuse, more = reuse_groups(spec, instance_id, availability_zone, leftovers)
            notes += more
        else:
            notes += ("some volumes of this instance exist already: nothing left by a replaced instance is reattached",)
    return RestorePlan(spec.name, instance_id, availability_zone, tuple(steps), dict(spec.filter_tags), wait_for,
                       spec.pending_snapshot_wait, snapshot_set=sources.snapshot_set,
                       fallback=tuple(fallback) if wait_for else (), notes=notes, reuse=reuse)


def reuse_groups(spec: SnapshotterSpec, instance_id: str, availability_zone: str,
                 leftovers: Sequence[dict[str, Any]]) -> tuple[tuple[tuple[VolumeStep, ...], ...], tuple[str, ...]]:
    """Volumes of this snapshotter that another instance left `available` in this zone (not detached on
    purpose), grouped by that instance; only a group with a volume for every mount point is reattached, as
    a whole: never a mix of two instances' volumes. Newest group first; in each, the volumes in mount point
    order, the order in which every agent racing for them attaches, so that exactly one wins a group."""
    by_mount = {v.mount_point: v for v in spec.volumes}
    notes: list[str] = []
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for vol in sorted(leftovers, key=lambda v: str(v.get("CreateTime", ""))):
        have = tags.tags_of(vol)
        owner, mp = have.get(tags.INSTANCE_ID), have.get(tags.MOUNT_POINT)
        if (not tags.belongs(vol, spec.filter_tags, present=(tags.MOUNT_POINT, tags.INSTANCE_ID)) or owner == instance_id
                or mp not in by_mount or tags.DETACHED in have or vol.get("State") != "available"):
            continue
        if vol.get("AvailabilityZone") != availability_zone:
            notes.append(f"{mp}: {vol['VolumeId']} left by {owner} is in {vol.get('AvailabilityZone')}, not "
                         f"{availability_zone}; volumes are not moved between zones, the snapshots are used")
            continue
        groups.setdefault(str(owner), {})[str(mp)] = vol
    complete = []
    for owner, members in groups.items():
        missing = sorted(set(by_mount) - set(members))
        if missing:
            notes.append(f"volumes left by {owner} lack {', '.join(missing)}: not reattached, so that the mount "
                         "points are not restored from different sources")
            continue
        newest = max(str(v.get("CreateTime", "")) for v in members.values())
        steps = tuple(VolumeStep(mp, by_mount[mp].device, Action.REATTACH, by_mount[mp], volume_id=members[mp]["VolumeId"],
                                 size=int(members[mp].get("Size", by_mount[mp].size))) for mp in sorted(members))
        complete.append((newest, steps))
    return tuple(steps for _, steps in sorted(complete, key=lambda c: c[0], reverse=True)), tuple(notes)


def _check_free(mount_point: str, device: str, volume_id: str | None, occupied: dict[str, str]) -> None:
    """Refuse before anything is created when another volume (the root volume, or one the agent did not make
    for this mount point) holds the attachment point; EC2 would refuse the attach after the create."""
    holder = occupied.get(canonical_device(device))
    if holder is not None and holder != volume_id:
        raise BadInput(messages.device_taken(mount_point, device, holder))


def _create(v: VolumeSpec, snap: dict[str, Any] | None) -> VolumeStep:
    choice = _choice(snap) if snap else None
    size = max(v.size, choice.volume_size) if choice else v.size
    return VolumeStep(v.mount_point, v.device, Action.CREATE, v, snapshot=choice, size=size,
                      format_if_blank=choice is None, grow=bool(choice and v.size > choice.volume_size))


def current_volume(our_volumes: Sequence[dict[str, Any]], instance_id: str, mount_point: str,
                   filter_tags: dict[str, str]) -> dict[str, Any] | None:
    """This instance's volume for a mount point: the one attached here, else the newest one an interrupted
    run left available. Volumes unmount-snapshots detached on purpose do not count, and neither does
    anything without all of this snapshotter's tags, whatever the server-side filter returned."""
    want = {**filter_tags, tags.MOUNT_POINT: mount_point, tags.INSTANCE_ID: instance_id}
    volumes = [v for v in our_volumes if tags.belongs(v, want)
               and v.get("State") not in GONE_STATES and tags.DETACHED not in tags.tags_of(v)]
    attached = [v for v in volumes if attachment(v, instance_id)]
    if attached:
        return attached[0]
    available = sorted((v for v in volumes if v.get("State") in ("available", "creating")),
                       key=lambda v: str(v.get("CreateTime", "")))
    return available[-1] if available else None


def create_volume_params(plan: RestorePlan, step: VolumeStep, created_at: str, init_rate_ok: bool) -> dict[str, Any]:
    s = step.spec
    volume_tags = {**plan.tags, tags.MOUNT_POINT: step.mount_point, tags.INSTANCE_ID: plan.instance_id, tags.CREATED: created_at}
    params: dict[str, Any] = {
        "AvailabilityZone": plan.availability_zone,
        "Size": step.size,
        "VolumeType": s.volume_type,
        # Unique per run and mount point: a retried call returns the same volume; a later run finds it by tags.
        "ClientToken": f"snaptastic-{plan.run_id}-{uuid.uuid5(uuid.NAMESPACE_URL, step.mount_point).hex[:16]}",
        "TagSpecifications": [{"ResourceType": "volume", "Tags": tags.tag_list(volume_tags)}],
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


def check_pinned(spec: SnapshotterSpec, pins: dict[str, str], found: Sequence[dict[str, Any]], force: bool) -> dict[str, dict[str, Any]]:
    """Pinned snapshots must exist, be completed and (unless forced) carry this snapshotter's tags."""
    by_id = {s["SnapshotId"]: s for s in found}
    configured = {v.mount_point for v in spec.volumes}
    out: dict[str, dict[str, Any]] = {}
    for mp, snap_id in pins.items():
        if mp not in configured:
            raise BadInput(messages.pin_not_configured(mp, spec.name, sorted(configured)))
        snap = by_id.get(snap_id)
        if snap is None:
            raise BadInput(messages.pin_not_found(snap_id))
        if snap.get("State") != "completed":
            raise BadInput(messages.pin_not_completed(snap_id, str(snap.get("State"))))
        have = tags.tags_of(snap)
        wrong = {k: have.get(k) for k, v in spec.filter_tags.items() if have.get(k) != v}
        if wrong and not force:
            shown = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
            raise BadInput(messages.pin_foreign(snap_id, shown))
        out[mp] = snap
    return out


def parse_pins(values: Sequence[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for value in values:
        mp, sep, snap = value.partition("=")
        if not sep or not mp.startswith("/") or not snap.startswith("snap-"):
            raise BadInput(messages.bad_pin(value))
        pins[mp.rstrip("/") or "/"] = snap
    return pins

