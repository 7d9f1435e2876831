"""In-memory EC2, metadata service and devices behind the agent's narrow interfaces (`system/interfaces.py`).

Like aws-ebs-csi-driver's fake cloud provider: they follow EC2's documented behaviour where the agent relies on
it and nothing more, so that unit tests drive the orchestration and every exit code in milliseconds without
root; the lab is the proof of the whole path.

- Time passes only when the agent looks: every DescribeVolumes call is one poll for every volume in a
  transition (`creating`, `attaching`, `detaching`), every DescribeSnapshots call one poll for every pending
  snapshot. A transition completes after `create_polls`, `attach_polls`, `detach_polls` or `snapshot_polls`
  polls (0: the next poll sees it done); the call that starts it answers with the transitional state, as
  EC2 does.
- What EC2 refuses, the fake refuses with EC2's error codes: an unknown id, AttachVolume of a volume that is
  not `available` or into an attachment point in use, a CreateVolume whose ClientToken was used with other
  parameters, deleting a volume in use or a snapshot an AMI uses, and so on.
- `fail(action, code)` makes an action raise `AwsError(action, code, message)`; `when(action, fn)` runs `fn`
  whenever an action is called (a signal arriving mid-run, another agent acting); `calls` counts every
  action, `log` keeps their order.
- `FakeDevices` shares `FakeEc2.disks`: a volume attached to its instance appears as a block device, a volume
  made from a snapshot holds the snapshot's filesystem and files, an empty one is blank until mkfs.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snaptastic_boot import messages
from snaptastic_boot.errors import AwsError, CommandError, OperationFailed, UnsafeOperation
from snaptastic_boot.model import Mount, Probe, canonical_device
from snaptastic_boot.system.imds import InstanceMetadata
from snaptastic_boot.tags import tag_list, tags_of

INSTANCE_ID = "i-0fake"
ZONE = "us-east-1a"
ROOT_DEVICE = "/dev/xvda"
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}-{next(_ids):017x}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _set_tags(resource: dict[str, Any], tags: dict[str, str]) -> None:
    resource["Tags"] = tag_list({**tags_of(resource), **tags})


def _matches(resource: dict[str, Any], filters: Sequence[dict[str, Any]]) -> bool:
    """EC2's filter semantics: every filter must match, any of a filter's values may."""
    have = tags_of(resource)
    for f in filters:
        name, values = f["Name"], [str(v) for v in f["Values"]]
        if name.startswith("tag:"):
            ok = have.get(name[4:]) in values
        elif name == "tag-key":
            ok = any(k in have for k in values)
        elif name == "volume-id":
            ok = resource.get("VolumeId") in values
        elif name == "snapshot-id":
            ok = resource.get("SnapshotId") in values
        elif name == "status":
            ok = resource.get("State") in values
        elif name == "attachment.instance-id":
            ok = any(a["InstanceId"] in values for a in resource.get("Attachments", []))
        else:
            raise AssertionError(f"the fake does not know the filter {name}; teach it EC2's meaning first")
        if not ok:
            return False
    return True


def _copy(resource: dict[str, Any]) -> dict[str, Any]:
    """What an API answer holds: a copy, so that the agent never sees later changes through it."""
    out = dict(resource)
    out["Tags"] = [dict(t) for t in resource.get("Tags", [])]
    if "Attachments" in resource:
        out["Attachments"] = [dict(a) for a in resource["Attachments"]]
    return out


@dataclass
class Disk:
    """What a volume holds, as far as the agent can see: a filesystem (or a partition table, or nothing) and files."""

    fstype: str | None = None
    uuid: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    size_gib: int | None = None  # the filesystem's own size, once it has one
    pttype: str | None = None

    def copy(self) -> Disk:
        return Disk(self.fstype, self.uuid, dict(self.files), self.size_gib, self.pttype)


@dataclass
class FakeEc2:
    """`Ec2Api` in memory: instances with a boot volume each, volumes, snapshots, AMIs' snapshots."""

    calls: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)  # every action, in the order the agent called them
    throttled: int = 0
    throttle_wait: float = 0.0
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    disks: dict[str, Disk] = field(default_factory=dict)  # by volume or snapshot id
    images: dict[str, str] = field(default_factory=dict)  # snapshot id -> AMI id
    peers: dict[str, FakeEc2] = field(default_factory=dict)  # other regions' EC2, by region, for CopySnapshot
    # How many polls each transition takes (see the module's docstring), and how a new snapshot ends.
    create_polls: int = 0
    attach_polls: int = 0
    detach_polls: int = 0
    snapshot_polls: int = 0
    snapshot_outcome: str = "completed"
    # Snapshot id -> the states it reports at its next DescribeSnapshots calls, one per call.
    scripted: dict[str, list[str]] = field(default_factory=dict)
    _faults: dict[str, list[Any]] = field(default_factory=dict)  # action -> [error, calls left or None]
    _hooks: dict[str, list[Callable[[], None]]] = field(default_factory=dict)
    _tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # ClientToken -> (parameters, volume id)
    _transitions: dict[str, list[Any]] = field(default_factory=dict)  # resource id -> [polls left, finish]
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.add_instance(INSTANCE_ID)

    # -- set-up and inspection, for tests ------------------------------------------------------------------

    def add_instance(self, instance_id: str, zone: str = ZONE) -> str:
        """A running instance with its boot volume attached at /dev/xvda; returns the boot volume's id."""
        self.instances[instance_id] = {"InstanceId": instance_id, "Placement": {"AvailabilityZone": zone},
                                       "RootDeviceName": ROOT_DEVICE, "RootDeviceType": "ebs",
                                       "State": {"Name": "running"}}
        root = self.add_volume(size=8, zone=zone)
        self.volumes[root]["Attachments"] = [self._attachment(root, instance_id, ROOT_DEVICE, "attached", True)]
        self.volumes[root]["State"] = "in-use"
        self.disks[root] = Disk("ext4", str(uuid.uuid4()), {}, 8)
        self.instances[instance_id]["root_volume"] = root
        return root

    def root_volume(self, instance_id: str = INSTANCE_ID) -> str:
        return str(self.instances[instance_id]["root_volume"])

    def add_volume(self, size: int = 1, tags: dict[str, str] | None = None, zone: str = ZONE,
                   snapshot_id: str = "", disk: Disk | None = None, created: dt.datetime | None = None) -> str:
        """A volume that exists before the run (`available`), e.g. one a replaced instance left."""
        vid = _id("vol")
        self.volumes[vid] = {"VolumeId": vid, "State": "available", "Size": size, "SnapshotId": snapshot_id,
                             "AvailabilityZone": zone, "VolumeType": "gp3", "CreateTime": created or _now(),
                             "Encrypted": False, "Attachments": [], "Tags": tag_list(tags or {})}
        self.disks[vid] = disk or Disk()
        return vid

    def add_snapshot(self, mount_point: str, tags: dict[str, str], minutes_ago: float = 60, state: str = "completed",
                     files: dict[str, str] | None = None, size: int = 1, volume_id: str = "vol-ffffffff",
                     fstype: str | None = "ext4") -> str:
        """A snapshot of a volume with an ext4 filesystem holding `files` (fstype None: a blank volume's)."""
        sid = _id("snap")
        start = _now() - dt.timedelta(minutes=minutes_ago)
        self.snapshots[sid] = {"SnapshotId": sid, "State": state, "StartTime": start, "VolumeSize": size,
                               "VolumeId": volume_id, "Progress": "100%" if state == "completed" else "50%",
                               "OwnerId": "123456789012", "Description": "", "Encrypted": False, "Tags": []}
        _set_tags(self.snapshots[sid], {**tags, "mount_point": mount_point})
        self.disks[sid] = Disk(fstype, str(uuid.uuid4()) if fstype else None, dict(files or {}), size if fstype else None)
        return sid

    def attach_now(self, volume_id: str, instance_id: str, device: str) -> None:
        """An attachment made before the run, complete (as an earlier boot left it)."""
        self.attach_volume(volume_id, instance_id, device)
        self._finish(volume_id)
        self.calls.clear()
        self.log.clear()

    def fail(self, action: str, code: str, message: str = "refused by the test", times: int | None = None) -> None:
        """Make `action` raise AwsError(action, code, message): every call, or the next `times` calls."""
        self._faults[action] = [AwsError(action, code, message), times]

    def heal(self, action: str) -> None:
        self._faults.pop(action, None)

    def when(self, action: str, fn: Callable[[], None]) -> None:
        """Run `fn` each time `action` is called, as the request arrives (a signal, another agent...)."""
        self._hooks.setdefault(action, []).append(fn)

    def attached(self, instance_id: str = INSTANCE_ID) -> list[dict[str, Any]]:
        """Volumes attached (or attaching) to the instance, its boot volume included."""
        return [v for v in self.volumes.values() if any(a["InstanceId"] == instance_id for a in v["Attachments"])]

    def data_volumes(self) -> dict[str, dict[str, Any]]:
        """Every volume but the instances' boot volumes."""
        roots = {i["root_volume"] for i in self.instances.values()}
        return {vid: v for vid, v in self.volumes.items() if vid not in roots}

    def delete_on_termination(self, instance_id: str = INSTANCE_ID) -> dict[str, bool]:
        """Device name -> DeleteOnTermination of the instance's data volumes."""
        return {a["Device"]: a["DeleteOnTermination"] for v in self.attached(instance_id) for a in v["Attachments"]
                if a["Device"] != ROOT_DEVICE}

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def mutating_calls(self) -> int:
        return sum(n for action, n in self.calls.items() if not action.startswith("Describe"))

    # -- the machinery -----------------------------------------------------------------------------------

    def _call(self, action: str) -> None:
        self.calls[action] += 1
        self.log.append(action)
        for fn in self._hooks.get(action, []):
            fn()
        fault = self._faults.get(action)
        if fault is not None:
            error, left = fault
            if left is not None:
                fault[1] = left - 1
                if fault[1] <= 0:
                    del self._faults[action]
            raise error

    def _start(self, resource_id: str, polls: int, finish: Callable[[], None]) -> None:
        self._transitions[resource_id] = [polls, finish]

    def _poll(self, prefix: str) -> None:
        """One poll of every transition of this kind of resource: each completes once its polls are used up."""
        for rid, transition in list(self._transitions.items()):
            if not rid.startswith(prefix):
                continue
            if transition[0] > 0:
                transition[0] -= 1
            else:
                self._finish(rid)

    def _finish(self, resource_id: str) -> None:
        transition = self._transitions.pop(resource_id, None)
        if transition is not None:
            transition[1]()

    def _volume(self, action: str, volume_id: str) -> dict[str, Any]:
        if volume_id not in self.volumes:
            raise AwsError(action, "InvalidVolume.NotFound", f"The volume '{volume_id}' does not exist.")
        return self.volumes[volume_id]

    def _snapshot(self, action: str, snapshot_id: str) -> dict[str, Any]:
        if snapshot_id not in self.snapshots:
            raise AwsError(action, "InvalidSnapshot.NotFound", f"The snapshot '{snapshot_id}' does not exist.")
        return self.snapshots[snapshot_id]

    def _instance(self, action: str, instance_id: str) -> dict[str, Any]:
        if instance_id not in self.instances:
            raise AwsError(action, "InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist")
        return self.instances[instance_id]

    @staticmethod
    def _attachment(volume_id: str, instance_id: str, device: str, state: str, delete: bool) -> dict[str, Any]:
        return {"VolumeId": volume_id, "InstanceId": instance_id, "Device": device, "State": state,
                "AttachTime": _now(), "DeleteOnTermination": delete}

    # -- reads -------------------------------------------------------------------------------------------

    def describe_snapshots(self, filters: list[dict[str, Any]], snapshot_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
        with self._lock:
            self._call("DescribeSnapshots")
            self._poll("snap-")
            for sid, states in self.scripted.items():
                if states and sid in self.snapshots:
                    self.snapshots[sid]["State"] = states.pop(0)
            chosen = [self._snapshot("DescribeSnapshots", s) for s in snapshot_ids] if snapshot_ids else self.snapshots.values()
            return [_copy(s) for s in chosen if _matches(s, filters)]

    def describe_volumes(self, filters: list[dict[str, Any]] | None = None, volume_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
        with self._lock:
            self._call("DescribeVolumes")
            self._poll("vol-")
            chosen = [self._volume("DescribeVolumes", v) for v in volume_ids] if volume_ids else self.volumes.values()
            return [_copy(v) for v in chosen if _matches(v, filters or [])]

    def describe_instance(self, instance_id: str) -> dict[str, Any]:
        with self._lock:
            self._call("DescribeInstances")
            instance = {k: v for k, v in self._instance("DescribeInstances", instance_id).items() if k != "root_volume"}
            mappings = [{"DeviceName": a["Device"], "Ebs": {"VolumeId": v["VolumeId"], "Status": a["State"],
                                                            "DeleteOnTermination": a["DeleteOnTermination"],
                                                            "AttachTime": a["AttachTime"]}}
                        for v in self.attached(instance_id) for a in v["Attachments"] if a["InstanceId"] == instance_id]
        return {**instance, "BlockDeviceMappings": sorted(mappings, key=lambda m: m["DeviceName"])}

    def images_using_snapshots(self, snapshot_ids: Sequence[str]) -> dict[str, str]:
        if not snapshot_ids:
            return {}
        with self._lock:
            self._call("DescribeImages")
            return {s: ami for s, ami in self.images.items() if s in snapshot_ids}

    # -- writes ------------------------------------------------------------------------------------------

    def create_volume(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._call("CreateVolume")
            token = params.get("ClientToken")
            fingerprint = repr(sorted((k, repr(v)) for k, v in params.items() if k != "ClientToken"))
            if token in self._tokens:
                # EC2: the same token with the same parameters returns the volume the first call made.
                used_with, vid = self._tokens[token]
                if used_with != fingerprint:
                    raise AwsError("CreateVolume", "IdempotentParameterMismatch",
                                   f"The client token {token} was already used with different parameters")
                return _copy(self.volumes[vid])
            if not params.get("AvailabilityZone"):
                raise AwsError("CreateVolume", "MissingParameter", "The request must contain the parameter AvailabilityZone")
            snapshot_id = params.get("SnapshotId") or ""
            source = self._snapshot("CreateVolume", snapshot_id) if snapshot_id else None
            if source is not None and source["State"] != "completed":
                raise AwsError("CreateVolume", "IncorrectState", f"Snapshot '{snapshot_id}' is not 'completed'.")
            size = params.get("Size") or (source["VolumeSize"] if source else None)
            if size is None:
                raise AwsError("CreateVolume", "MissingParameter", "The request must contain the parameter size or snapshotId")
            if source is not None and size < source["VolumeSize"]:
                raise AwsError("CreateVolume", "InvalidParameterValue",
                               f"Volume of {size}GiB is too small; minimum is {source['VolumeSize']}GiB")
            tags: dict[str, str] = {}
            for spec in params.get("TagSpecifications", []):
                if spec["ResourceType"] == "volume":
                    tags.update(tags_of(spec))
            disk = self.disks[snapshot_id].copy() if snapshot_id in self.disks else Disk()
            vid = self.add_volume(int(size), tags, params["AvailabilityZone"], snapshot_id, disk)
            volume = self.volumes[vid]
            volume.update(State="creating", VolumeType=params.get("VolumeType", "gp2"),
                          Encrypted=bool(params.get("Encrypted") or (source or {}).get("Encrypted")))
            self._start(vid, self.create_polls, lambda: volume.update(State="available"))
            if token:
                self._tokens[token] = (fingerprint, vid)
            return _copy(volume)

    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> dict[str, Any]:
        with self._lock:
            self._call("AttachVolume")
            volume = self._volume("AttachVolume", volume_id)
            instance = self._instance("AttachVolume", instance_id)
            if volume["Attachments"] or volume["State"] == "in-use":
                raise AwsError("AttachVolume", "VolumeInUse", f"{volume_id} is already attached to an instance")
            if volume["State"] != "available":
                raise AwsError("AttachVolume", "IncorrectState", f"vol '{volume_id}' is not 'available'.")
            if volume["AvailabilityZone"] != instance["Placement"]["AvailabilityZone"]:
                raise AwsError("AttachVolume", "InvalidVolume.ZoneMismatch",
                               f"The volume '{volume_id}' is not in the same availability zone as instance '{instance_id}'")
            used = {canonical_device(a["Device"]) for v in self.attached(instance_id) for a in v["Attachments"]}
            if canonical_device(device) in used:
                raise AwsError("AttachVolume", "InvalidParameterValue", f"Attachment point {device} is already in use")
            att = self._attachment(volume_id, instance_id, device, "attaching", False)
            volume["Attachments"] = [att]
            volume["State"] = "in-use"
            self._start(volume_id, self.attach_polls, lambda: att.update(State="attached"))
            return dict(att)

    def detach_volume(self, volume_id: str) -> dict[str, Any]:
        with self._lock:
            self._call("DetachVolume")
            volume = self._volume("DetachVolume", volume_id)
            if not volume["Attachments"]:
                raise AwsError("DetachVolume", "IncorrectState", f"Volume '{volume_id}' is in the 'available' state.")
            att = volume["Attachments"][0]
            if att["Device"] == ROOT_DEVICE:
                raise AwsError("DetachVolume", "OperationNotPermitted", "Cannot detach the root volume of a running instance")
            att["State"] = "detaching"

            def gone() -> None:
                volume["Attachments"] = []
                volume["State"] = "available"

            self._start(volume_id, self.detach_polls, gone)
            return dict(att)

    def delete_volume(self, volume_id: str) -> None:
        with self._lock:
            self._call("DeleteVolume")
            volume = self._volume("DeleteVolume", volume_id)
            if volume["State"] != "available":
                raise AwsError("DeleteVolume", "VolumeInUse", f"Volume {volume_id} is currently attached to an instance")
            del self.volumes[volume_id]

    def set_delete_on_termination(self, instance_id: str, devices: dict[str, bool]) -> None:
        with self._lock:
            self._call("ModifyInstanceAttribute")
            self._instance("ModifyInstanceAttribute", instance_id)
            by_device = {a["Device"]: a for v in self.attached(instance_id) for a in v["Attachments"]}
            for device, flag in devices.items():
                if device not in by_device:
                    raise AwsError("ModifyInstanceAttribute", "InvalidInstanceAttributeValue",
                                   f"No device is currently mapped at {device}")
                by_device[device]["DeleteOnTermination"] = flag

    def _check_pending(self, action: str, volume: dict[str, Any]) -> None:
        vid = volume["VolumeId"]
        pending = [s for s in self.snapshots.values() if s["VolumeId"] == vid and s["State"] == "pending"]
        if len(pending) >= (1 if volume["VolumeType"] in ("st1", "sc1") else 5):
            raise AwsError(action, "SnapshotCreationPerVolumeRateExceeded",
                           f"The maximum per volume CreateSnapshot request rate has been exceeded for {vid}")

    def _snapshot_of(self, volume: dict[str, Any], description: str, tags: dict[str, str]) -> dict[str, Any]:
        vid = volume["VolumeId"]
        sid = _id("snap")
        snap = {"SnapshotId": sid, "VolumeId": vid, "State": "pending", "StartTime": _now(), "Progress": "",
                "VolumeSize": volume["Size"], "OwnerId": "123456789012", "Description": description,
                "Encrypted": volume.get("Encrypted", False), "Tags": tag_list(tags)}
        self.snapshots[sid] = snap
        self.disks[sid] = self.disks[vid].copy()
        outcome = self.snapshot_outcome
        self._start(sid, self.snapshot_polls, lambda: snap.update(State=outcome, Progress="100%"))
        return _copy(snap)

    def create_snapshots(self, instance_id: str, exclude_volume_ids: Sequence[str], tags: dict[str, str],
                         description: str, answered: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """CreateSnapshots with ExcludeBootVolume and CopyTagsFromSource=volume (what `system.ec2` sends): one
        snapshot per attached data volume not excluded, with the volume's tags and the given ones (these win).
        All or nothing."""
        with self._lock:
            self._call("CreateSnapshots")
            self._instance("CreateSnapshots", instance_id)
            for vid in exclude_volume_ids:
                self._volume("CreateSnapshots", vid)
            targets = [v for v in self.attached(instance_id)
                       if v["Attachments"][0]["Device"] != ROOT_DEVICE and v["VolumeId"] not in exclude_volume_ids]
            for v in targets:
                self._check_pending("CreateSnapshots", v)
            made = [self._snapshot_of(v, description, {**tags_of(v), **tags}) for v in targets]
        if answered is not None:
            answered()  # accepted: EC2 has taken the snapshots' point in time
        return made

    def create_snapshot(self, volume_id: str, description: str, tags: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            self._call("CreateSnapshot")
            volume = self._volume("CreateSnapshot", volume_id)
            self._check_pending("CreateSnapshot", volume)
            return self._snapshot_of(volume, description, dict(tags))

    def copy_snapshot(self, source_region: str, source_snapshot_id: str, description: str, tags: dict[str, str]) -> str:
        """CopySnapshot, called in the destination: the source must be completed; the copy starts pending, with
        only the given tags, and EC2's placeholder volume id."""
        with self._lock:
            self._call("CopySnapshot")
            source = self.peers.get(source_region)
            snap = source.snapshots.get(source_snapshot_id) if source is not None else None
            if source is None or snap is None:
                raise AwsError("CopySnapshot", "InvalidSnapshot.NotFound",
                               f"The snapshot '{source_snapshot_id}' does not exist.")
            if snap["State"] != "completed":
                raise AwsError("CopySnapshot", "IncorrectState", f"Snapshot '{source_snapshot_id}' is not 'completed'.")
            sid = _id("snap")
            made = {**_copy(snap), "SnapshotId": sid, "VolumeId": "vol-ffffffff", "State": "pending", "Progress": "",
                    "StartTime": _now(), "Description": description, "Tags": tag_list(tags)}
            self.snapshots[sid] = made
            self.disks[sid] = source.disks[source_snapshot_id].copy()
            self._start(sid, self.snapshot_polls, lambda: made.update(State="completed", Progress="100%"))
            return sid

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self._lock:
            self._call("DeleteSnapshot")
            self._snapshot("DeleteSnapshot", snapshot_id)
            if snapshot_id in self.images:
                raise AwsError("DeleteSnapshot", "InvalidSnapshot.InUse",
                               f"The snapshot {snapshot_id} is currently in use by {self.images[snapshot_id]}")
            del self.snapshots[snapshot_id]

    def create_tags(self, resource_ids: Sequence[str], tags: dict[str, str]) -> None:
        with self._lock:
            self._call("CreateTags")
            found = [self._volume("CreateTags", r) if r.startswith("vol-") else self._snapshot("CreateTags", r)
                     for r in resource_ids]
            for resource in found:
                _set_tags(resource, tags)

    def prepare(self, *actions: str) -> None:
        """Nothing to resolve in memory; not an API call."""

    def supports_initialization_rate(self) -> bool:
        return True


@dataclass
class FakeImds:
    """The metadata service of the instance FakeEc2 knows, or (`error`) one that does not answer."""

    userdata: bytes | None = b'{"role": "solr", "cluster": "search", "environment": "test"}'
    base: str = "http://fake-imds/"
    version: str | None = "v2"
    error: Exception | None = None
    instance_id: str = INSTANCE_ID
    zone: str = ZONE

    def instance_metadata(self) -> InstanceMetadata:
        if self.error is not None:
            raise self.error
        return InstanceMetadata(self.instance_id, self.zone[:-1], self.zone, "m6i.large", "123456789012", "ami-0fake")

    def user_data(self) -> bytes | None:
        if self.error is not None:
            raise self.error
        return self.userdata


@dataclass
class FakeDevices:
    """One instance's block devices (the volumes FakeEc2 has attached to it), mount table and freezes.

    A device is `/dev/fake/<volume id>`, present while the volume's attachment to this instance is
    `attached`; its major:minor is derived from the volume id, and the root filesystem is mounted from the
    boot volume. mount, umount and freeze refuse what the kernel refuses.
    """

    ec2: FakeEc2
    instance_id: str = INSTANCE_ID
    table: dict[str, Mount] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    events: list[str] = field(default_factory=list)
    refuse_grow: set[str] = field(default_factory=set)  # mount points whose grow fails, as without CAP_SYS_RESOURCE
    held_elsewhere: set[str] = field(default_factory=set)  # volumes also mounted in another mount namespace
    refuse_freeze: set[str] = field(default_factory=set)  # mount points whose freeze fails
    missing: set[str] = field(default_factory=set)  # volumes whose device never appears
    directories: dict[str, list[str]] = field(default_factory=dict)  # what a mount point holds while nothing is mounted
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        root = self.path(self.ec2.root_volume(self.instance_id))
        self.table["/"] = Mount("/", str(root), "ext4", self.major_minor(root), "rw,relatime")

    @staticmethod
    def path(volume_id: str) -> Path:
        return Path("/dev/fake") / volume_id

    def _volume_of(self, path: Path) -> str:
        return path.name

    def _disk(self, path: Path) -> Disk:
        vid = self._volume_of(path)
        if self.find(vid, "") != path:
            raise OperationFailed(messages.cannot("read", path, "No such device"))
        return self.ec2.disks[vid]

    def find(self, volume_id: str, device_name: str) -> Path | None:
        volume = self.ec2.volumes.get(volume_id)
        if volume is None or volume_id in self.missing:
            return None
        present = any(a["InstanceId"] == self.instance_id and a["State"] in ("attached", "detaching")
                      for a in volume["Attachments"])
        return self.path(volume_id) if present else None

    def verify_identity(self, path: Path, volume_id: str) -> None:
        if self._volume_of(path) != volume_id:
            raise UnsafeOperation(messages.wrong_volume(path, self._volume_of(path), volume_id))

    def major_minor(self, path: Path) -> str:
        return f"259:{int(self._volume_of(path).split('-')[1], 16)}"

    def probe(self, path: Path) -> Probe:
        disk = self._disk(path)
        return Probe(disk.fstype, disk.uuid, disk.pttype)

    def mkfs(self, path: Path, fstype: str, volume_id: str) -> None:
        disk = self._disk(path)
        if not self.probe(path).blank or disk.files:
            raise UnsafeOperation(messages.not_blank(path, volume_id))
        disk.fstype, disk.uuid = fstype, str(uuid.uuid4())
        disk.size_gib = self.ec2.volumes[volume_id]["Size"]
        self.events.append(f"mkfs {volume_id}")

    def grow(self, path: Path, mount_point: str, fstype: str) -> None:
        if mount_point in self.refuse_grow:
            raise CommandError(["resize2fs", str(path)], 1, "", "Permission denied to resize filesystem")
        self._disk(path).size_gib = self.ec2.volumes[self._volume_of(path)]["Size"]
        self.events.append(f"grow {mount_point}")

    def device_size(self, path: Path) -> int:
        self._disk(path)
        return int(self.ec2.volumes[self._volume_of(path)]["Size"]) << 30

    def fs_size(self, path: Path, mount_point: str, fstype: str) -> int | None:
        size = self._disk(path).size_gib
        return None if size is None else size << 30

    def mounts(self) -> list[Mount]:
        return list(self.table.values())

    def mount_at(self, mount_point: str) -> Mount | None:
        return self.table.get(mount_point)

    def mount(self, path: Path, mount_point: str, fstype: str, options: str) -> None:
        with self._lock:
            argv = ["mount", "-t", fstype, "-o", options, str(path), mount_point]
            disk = self._disk(path)
            if mount_point in self.table:
                raise CommandError(argv, 32, "", f"mount: {mount_point}: {self.table[mount_point].source} already mounted")
            if disk.fstype != fstype:
                raise CommandError(argv, 32, "", f"mount: {mount_point}: wrong fs type, bad option, bad superblock on {path}")
            self.table[mount_point] = Mount(mount_point, str(path), fstype, self.major_minor(path), options)
            self.events.append(f"mount {mount_point}")

    def umount(self, mount_point: str) -> None:
        with self._lock:
            if mount_point not in self.table:
                raise CommandError(["umount", mount_point], 32, "", f"umount: {mount_point}: not mounted.")
            source = Path(self.table.pop(mount_point).source)
            self.events.append(f"umount {mount_point}")
        self.wait_released(mount_point, source)

    def wait_released(self, mount_point: str, device: Path) -> None:
        if device.name in self.held_elsewhere:
            raise OperationFailed(messages.mounted_elsewhere(mount_point, str(device), "process 4242 (containerd)"))

    def entries(self, directory: str) -> list[str]:
        return sorted(self.directories.get(directory, []))

    def xfs_uuid_in_use(self, uuid: str) -> bool:
        return any(m.fstype == "xfs" and self.ec2.disks[Path(m.source).name].uuid == uuid for m in self.table.values())

    def flush(self, mount_point: str) -> None:
        if mount_point not in self.table:
            raise OperationFailed(messages.cannot("flush", mount_point, "No such file or directory"))
        self.events.append(f"flush {mount_point}")

    def freeze(self, mount_point: str) -> None:
        with self._lock:
            if mount_point not in self.table:
                raise OperationFailed(messages.cannot("freeze", mount_point, "No such file or directory"))
            if mount_point in self.refuse_freeze:
                raise OperationFailed(messages.cannot("freeze", mount_point, "Operation not supported"))
            if mount_point in self.frozen:  # FIFREEZE on a frozen filesystem: EBUSY
                raise OperationFailed(messages.cannot("freeze", mount_point, "Device or resource busy"))
            self.frozen.add(mount_point)
            self.events.append(f"freeze {mount_point}")

    def thaw(self, mount_point: str) -> bool:
        with self._lock:
            was = mount_point in self.frozen
            self.frozen.discard(mount_point)
            if was:
                self.events.append(f"thaw {mount_point}")
            return was

    def files(self, mount_point: str) -> dict[str, str]:
        """The files of the volume mounted here, for tests to write and read."""
        return self.ec2.disks[Path(self.table[mount_point].source).name].files
