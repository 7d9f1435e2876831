"""In-memory EC2, metadata service and devices behind the agent's narrow interfaces (`system/interfaces.py`).

They follow EC2's documented behaviour where the agent relies on it (ClientToken, attachment refusals, tags
copied by CreateSnapshots, filters) and nothing more: the lab is the proof of the whole path, these make
the orchestration and every exit code testable in milliseconds without root.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snaptastic_boot.errors import AwsError, CommandError, UnsafeOperation
from snaptastic_boot.model import Mount, Probe
from snaptastic_boot.system.imds import InstanceMetadata

INSTANCE_ID = "i-0fake"
ZONE = "us-east-1a"
ROOT_VOLUME = "vol-root"
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}-{next(_ids):017x}"


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def _set_tags(resource: dict[str, Any], tags: dict[str, str]) -> None:
    resource["Tags"] = [{"Key": k, "Value": v} for k, v in sorted({**_tags(resource), **tags}.items())]


def _matches(resource: dict[str, Any], filters: Sequence[dict[str, Any]], state_key: str) -> bool:
    for f in filters:
        name, values = f["Name"], list(f["Values"])
        if name.startswith("tag:"):
            ok = _tags(resource).get(name[4:]) in values
        elif name == "tag-key":
            ok = any(k in _tags(resource) for k in values)
        elif name == "volume-id":
            ok = resource.get("VolumeId") in values
        elif name == "status":
            ok = resource.get(state_key) in values
        else:
            raise AssertionError(f"the fake does not know the filter {name}")
        if not ok:
            return False
    return True


@dataclass
class Disk:
    """What a volume holds, as far as the agent can see: a filesystem (or nothing) and files."""

    fstype: str | None = None
    uuid: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    size_gib: int | None = None  # the filesystem's own size, once it has one


@dataclass
class FakeEc2:
    calls: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    throttle_wait: float = 0.0
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    disks: dict[str, Disk] = field(default_factory=dict)  # by volume or snapshot id
    failing: dict[str, str] = field(default_factory=dict)  # action -> error code, raised every time
    new_snapshot_state: str = "completed"
    images: dict[str, str] = field(default_factory=dict)  # snapshot id -> AMI id
    delete_on_termination: dict[str, bool] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    # Snapshot id -> the states it reports at its next DescribeSnapshots, one per call (a pending one completes).
    scripted: dict[str, list[str]] = field(default_factory=dict)

    def _call(self, action: str) -> None:
        self.calls[action] += 1
        if action in self.failing:
            raise AwsError(action, self.failing[action], "refused by the test")

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def mutating_calls(self) -> int:
        return sum(n for action, n in self.calls.items() if not action.startswith("Describe"))

    # -- set-up helpers for tests ------------------------------------------------------------------------

    def add_snapshot(self, mount_point: str, tags: dict[str, str], minutes_ago: float = 60, state: str = "completed",
                     files: dict[str, str] | None = None, size: int = 1) -> str:
        sid = _id("snap")
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes_ago)
        self.snapshots[sid] = {"SnapshotId": sid, "State": state, "StartTime": start, "VolumeSize": size,
                               "VolumeId": "vol-ffffffff", "Tags": []}
        _set_tags(self.snapshots[sid], {**tags, "mount_point": mount_point})
        self.disks[sid] = Disk("ext4", str(uuid.uuid4()), dict(files or {}), size)
        return sid

    def attached(self, instance_id: str = INSTANCE_ID) -> list[dict[str, Any]]:
        return [v for v in self.volumes.values() if any(a["InstanceId"] == instance_id for a in v["Attachments"])]

    # -- reads -------------------------------------------------------------------------------------------

    def describe_snapshots(self, filters: list[dict[str, Any]], snapshot_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
        self._call("DescribeSnapshots")
        for sid, states in self.scripted.items():
            if states and sid in self.snapshots:
                self.snapshots[sid]["State"] = states.pop(0)
        found = [s for s in self.snapshots.values() if _matches(s, filters, "State")]
        return [dict(s) for s in found if not snapshot_ids or s["SnapshotId"] in snapshot_ids]

    def describe_volumes(self, filters: list[dict[str, Any]] | None = None, volume_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
        self._call("DescribeVolumes")
        found = [v for v in self.volumes.values() if _matches(v, filters or [], "State")]
        return [dict(v) for v in found if not volume_ids or v["VolumeId"] in volume_ids]

    def describe_instance(self, instance_id: str) -> dict[str, Any]:
        self._call("DescribeInstances")
        mappings = [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeId": ROOT_VOLUME}}]
        mappings += [{"DeviceName": a["Device"], "Ebs": {"VolumeId": v["VolumeId"]}}
                     for v in self.attached(instance_id) for a in v["Attachments"]]
        return {"InstanceId": instance_id, "RootDeviceName": "/dev/xvda", "BlockDeviceMappings": mappings,
                "State": {"Name": "running"}}

    def images_using_snapshots(self, snapshot_ids: Sequence[str]) -> dict[str, str]:
        self._call("DescribeImages")
        return {s: ami for s, ami in self.images.items() if s in snapshot_ids}

    # -- writes ------------------------------------------------------------------------------------------

    def create_volume(self, params: dict[str, Any]) -> dict[str, Any]:
        self._call("CreateVolume")
        token = params.get("ClientToken")
        if token in self.tokens:  # a retried call returns the same volume, as EC2 does
            return dict(self.volumes[self.tokens[token]])
        vid = _id("vol")
        snapshot = params.get("SnapshotId")
        volume = {"VolumeId": vid, "State": "available", "Size": params["Size"], "SnapshotId": snapshot or "",
                  "AvailabilityZone": params["AvailabilityZone"], "VolumeType": params.get("VolumeType", "gp3"),
                  "CreateTime": dt.datetime.now(dt.timezone.utc), "Attachments": [], "Tags": []}
        for spec in params.get("TagSpecifications", []):
            _set_tags(volume, {t["Key"]: t["Value"] for t in spec["Tags"]})
        self.volumes[vid] = volume
        source = self.disks.get(snapshot or "")
        self.disks[vid] = Disk(source.fstype, source.uuid, dict(source.files), source.size_gib) if source else Disk()
        if token:
            self.tokens[token] = vid
        return dict(volume)

    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> dict[str, Any]:
        self._call("AttachVolume")
        volume = self.volumes[volume_id]
        if volume["Attachments"]:
            raise AwsError("AttachVolume", "VolumeInUse", f"{volume_id} is already attached to an instance")
        used = {a["Device"].replace("/dev/xvd", "/dev/sd") for v in self.attached(instance_id) for a in v["Attachments"]}
        if device.replace("/dev/xvd", "/dev/sd") in used:
            raise AwsError("AttachVolume", "InvalidParameterValue", f"Attachment point {device} is already in use")
        volume["Attachments"] = [{"InstanceId": instance_id, "Device": device, "State": "attached", "VolumeId": volume_id}]
        volume["State"] = "in-use"
        return {"VolumeId": volume_id, "State": "attaching"}

    def detach_volume(self, volume_id: str) -> dict[str, Any]:
        self._call("DetachVolume")
        self.volumes[volume_id]["Attachments"] = []
        self.volumes[volume_id]["State"] = "available"
        return {"VolumeId": volume_id, "State": "detaching"}

    def delete_volume(self, volume_id: str) -> None:
        self._call("DeleteVolume")
        del self.volumes[volume_id]

    def set_delete_on_termination(self, instance_id: str, devices: dict[str, bool]) -> None:
        self._call("ModifyInstanceAttribute")
        self.delete_on_termination.update(devices)

    def _snapshot_of(self, volume: dict[str, Any], description: str, tags: dict[str, str]) -> dict[str, Any]:
        sid = _id("snap")
        snap = {"SnapshotId": sid, "VolumeId": volume["VolumeId"], "State": self.new_snapshot_state,
                "StartTime": dt.datetime.now(dt.timezone.utc), "VolumeSize": volume["Size"],
                "Description": description, "Tags": []}
        _set_tags(snap, tags)
        self.snapshots[sid] = snap
        disk = self.disks[volume["VolumeId"]]
        self.disks[sid] = Disk(disk.fstype, disk.uuid, dict(disk.files), disk.size_gib)
        return dict(snap)

    def create_snapshots(self, instance_id: str, exclude_volume_ids: Sequence[str], tags: dict[str, str],
                         description: str) -> list[dict[str, Any]]:
        self._call("CreateSnapshots")
        return [self._snapshot_of(v, description, {**_tags(v), **tags}) for v in self.attached(instance_id)
                if v["VolumeId"] not in exclude_volume_ids]

    def create_snapshot(self, volume_id: str, description: str, tags: dict[str, str]) -> dict[str, Any]:
        self._call("CreateSnapshot")
        return self._snapshot_of(self.volumes[volume_id], description, tags)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._call("DeleteSnapshot")
        del self.snapshots[snapshot_id]

    def create_tags(self, resource_ids: Sequence[str], tags: dict[str, str]) -> None:
        self._call("CreateTags")
        for rid in resource_ids:
            _set_tags(self.volumes.get(rid) or self.snapshots[rid], tags)

    def prepare(self, *actions: str) -> None:
        pass

    def supports_initialization_rate(self) -> bool:
        return True


@dataclass
class FakeImds:
    userdata: bytes | None = b'{"role": "solr", "cluster": "search", "environment": "test"}'
    base: str = "http://fake-imds/"
    version: str = "v2"
    error: Exception | None = None

    def instance_metadata(self) -> InstanceMetadata:
        if self.error is not None:
            raise self.error
        return InstanceMetadata(INSTANCE_ID, "us-east-1", ZONE, "m6i.large")

    def user_data(self) -> bytes | None:
        return self.userdata


@dataclass
class FakeDevices:
    """This instance's block devices (the volumes FakeEc2 has attached to it), mount table and freezes."""

    ec2: FakeEc2
    instance_id: str = INSTANCE_ID
    table: dict[str, Mount] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    events: list[str] = field(default_factory=list)
    refuse_grow: set[str] = field(default_factory=set)  # mount points whose grow fails, as without CAP_SYS_RESOURCE

    def _volume_of(self, path: Path) -> str:
        return path.name

    def find(self, volume_id: str, device_name: str) -> Path | None:
        attached = {v["VolumeId"] for v in self.ec2.attached(self.instance_id)}
        return Path("/dev/fake") / volume_id if volume_id in attached else None

    def verify_identity(self, path: Path, volume_id: str) -> None:
        if self._volume_of(path) != volume_id:
            raise UnsafeOperation(f"{path} is not {volume_id}")

    def major_minor(self, path: Path) -> str:
        return f"259:{int(self._volume_of(path).split('-')[1], 16)}"

    def probe(self, path: Path) -> Probe:
        disk = self.ec2.disks[self._volume_of(path)]
        return Probe(disk.fstype, disk.uuid, None)

    def mkfs(self, path: Path, fstype: str, volume_id: str) -> None:
        disk = self.ec2.disks[volume_id]
        if disk.fstype or disk.files:
            raise UnsafeOperation(f"{path} is not blank")
        disk.fstype, disk.uuid = fstype, str(uuid.uuid4())
        disk.size_gib = self.ec2.volumes[volume_id]["Size"]
        self.events.append(f"mkfs {volume_id}")

    def grow(self, path: Path, mount_point: str, fstype: str) -> None:
        if mount_point in self.refuse_grow:
            raise CommandError(["resize2fs", str(path)], 1, "", "Permission denied to resize filesystem")
        self.ec2.disks[self._volume_of(path)].size_gib = self.ec2.volumes[self._volume_of(path)]["Size"]
        self.events.append(f"grow {mount_point}")

    def device_size(self, path: Path) -> int:
        return int(self.ec2.volumes[self._volume_of(path)]["Size"]) << 30

    def fs_size(self, path: Path, mount_point: str, fstype: str) -> int | None:
        size = self.ec2.disks[self._volume_of(path)].size_gib
        return None if size is None else size << 30

    def mounts(self) -> list[Mount]:
        return [Mount("/", "/dev/xvda1", "ext4", "202:1", "rw"), *self.table.values()]

    def mount_at(self, mount_point: str) -> Mount | None:
        return self.table.get(mount_point)

    def mount(self, path: Path, mount_point: str, fstype: str, options: str) -> None:
        self.table[mount_point] = Mount(mount_point, str(path), fstype, self.major_minor(path), options)
        self.events.append(f"mount {mount_point}")

    def umount(self, mount_point: str) -> None:
        del self.table[mount_point]
        self.events.append(f"umount {mount_point}")

    def entries(self, directory: str) -> list[str]:
        return []

    def xfs_uuid_in_use(self, uuid: str) -> bool:
        return False

    def flush(self, mount_point: str) -> None:
        pass

    def freeze(self, mount_point: str) -> None:
        self.frozen.add(mount_point)
        self.events.append(f"freeze {mount_point}")

    def thaw(self, mount_point: str) -> bool:
        was = mount_point in self.frozen
        self.frozen.discard(mount_point)
        if was:
            self.events.append(f"thaw {mount_point}")
        return was

    def files(self, mount_point: str) -> dict[str, str]:
        """The files of the volume mounted here, for tests to write and read."""
        return self.ec2.disks[Path(self.table[mount_point].source).name].files
