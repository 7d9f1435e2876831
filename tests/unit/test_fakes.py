"""The fakes keep to the interfaces and to what EC2 documents, so that a test passing against them means
something: the same methods and parameters as `Ec2Api` and `DeviceAdapter`, and EC2's answers where the
agent relies on them."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from snaptastic_boot.errors import AwsError, CommandError, OperationFailed
from snaptastic_boot.system.devices import Devices
from snaptastic_boot.system.interfaces import DeviceAdapter, Ec2Api
from tests.unit.fakes import INSTANCE_ID, ROOT_DEVICE, ZONE, FakeDevices, FakeEc2


def _methods(cls: type) -> dict[str, list[str]]:
    return {name: list(inspect.signature(fn).parameters) for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


@pytest.mark.parametrize(("interface", "fake"), [(Ec2Api, FakeEc2), (DeviceAdapter, FakeDevices), (DeviceAdapter, Devices)])
def test_the_fakes_and_the_real_adapter_have_the_interfaces_methods_and_parameters(interface: type, fake: type) -> None:
    have = _methods(fake)
    for name, params in _methods(interface).items():
        assert name in have, f"{fake.__name__} lacks {name}"
        assert [p for p in have[name] if p != "self"] == [p for p in params if p != "self"], name


def create(ec2: FakeEc2, token: str | None = None, size: int = 1, **more: object) -> dict[str, object]:
    params: dict[str, object] = {"AvailabilityZone": ZONE, "Size": size, **more}
    if token:
        params["ClientToken"] = token
    return ec2.create_volume(params)


def test_create_volume_with_the_same_client_token_returns_the_same_volume() -> None:
    ec2 = FakeEc2()
    first = create(ec2, "t-1")
    assert first["State"] == "creating"
    again = create(ec2, "t-1")
    assert again["VolumeId"] == first["VolumeId"] and len(ec2.data_volumes()) == 1
    with pytest.raises(AwsError) as refused:
        create(ec2, "t-1", size=2)
    assert refused.value.code == "IdempotentParameterMismatch"
    assert create(ec2, "t-2")["VolumeId"] != first["VolumeId"]


def test_transitions_complete_after_their_polls() -> None:
    ec2 = FakeEc2(create_polls=1, attach_polls=2)
    vid = str(create(ec2)["VolumeId"])
    states = [ec2.describe_volumes(volume_ids=[vid])[0]["State"] for _ in range(2)]
    assert states == ["creating", "available"]
    assert ec2.attach_volume(vid, INSTANCE_ID, "/dev/sdf")["State"] == "attaching"
    devices = FakeDevices(ec2)
    seen = []
    for _ in range(3):
        volume = ec2.describe_volumes(volume_ids=[vid])[0]
        seen.append((volume["Attachments"][0]["State"], devices.find(vid, "/dev/sdf") is not None))
    assert seen == [("attaching", False), ("attaching", False), ("attached", True)]


def test_attach_volume_refuses_as_ec2_does() -> None:
    ec2 = FakeEc2()
    vid = str(create(ec2)["VolumeId"])
    with pytest.raises(AwsError) as creating:
        ec2.attach_volume(vid, INSTANCE_ID, "/dev/sdf")
    assert creating.value.code == "IncorrectState"
    ec2.describe_volumes()
    other = ec2.add_volume()
    ec2.attach_now(other, INSTANCE_ID, "/dev/xvdf")
    with pytest.raises(AwsError, match="Attachment point /dev/sdf is already in use") as taken:
        ec2.attach_volume(vid, INSTANCE_ID, "/dev/sdf")
    assert taken.value.code == "InvalidParameterValue"
    with pytest.raises(AwsError) as root:
        ec2.attach_volume(vid, INSTANCE_ID, ROOT_DEVICE.replace("xvd", "sd"))
    assert root.value.code == "InvalidParameterValue"
    ec2.attach_volume(vid, INSTANCE_ID, "/dev/sdg")
    ec2.add_instance("i-0other")
    with pytest.raises(AwsError) as in_use:
        ec2.attach_volume(vid, "i-0other", "/dev/sdf")
    assert in_use.value.code == "VolumeInUse"
    elsewhere = ec2.add_volume(zone="us-east-1b")
    with pytest.raises(AwsError) as zone:
        ec2.attach_volume(elsewhere, INSTANCE_ID, "/dev/sdh")
    assert zone.value.code == "InvalidVolume.ZoneMismatch"
    with pytest.raises(AwsError) as missing:
        ec2.attach_volume("vol-0nosuch", INSTANCE_ID, "/dev/sdh")
    assert missing.value.code == "InvalidVolume.NotFound"


def test_detach_delete_and_unknown_ids() -> None:
    ec2 = FakeEc2()
    vid = ec2.add_volume()
    ec2.attach_now(vid, INSTANCE_ID, "/dev/sdf")
    with pytest.raises(AwsError) as in_use:
        ec2.delete_volume(vid)
    assert in_use.value.code == "VolumeInUse"
    with pytest.raises(AwsError) as root:
        ec2.detach_volume(ec2.root_volume())
    assert root.value.code == "OperationNotPermitted"
    assert ec2.detach_volume(vid)["State"] == "detaching"
    ec2.describe_volumes()
    with pytest.raises(AwsError) as twice:
        ec2.detach_volume(vid)
    assert twice.value.code == "IncorrectState"
    ec2.delete_volume(vid)
    with pytest.raises(AwsError) as gone:
        ec2.describe_volumes(volume_ids=[vid])
    assert gone.value.code == "InvalidVolume.NotFound"
    with pytest.raises(AwsError) as no_snapshot:
        ec2.describe_snapshots([], snapshot_ids=["snap-0nosuch"])
    assert no_snapshot.value.code == "InvalidSnapshot.NotFound"
    with pytest.raises(AssertionError, match="does not know the filter"):
        ec2.describe_volumes(filters=[{"Name": "size", "Values": ["1"]}])


def test_create_snapshots_leaves_out_the_boot_volume_and_the_excluded_and_copies_tags() -> None:
    ec2 = FakeEc2()
    a = ec2.add_volume(tags={"mount_point": "/mnt/a", "role": "volume's"})
    b = ec2.add_volume(tags={"mount_point": "/mnt/b"})
    for vid, dev in ((a, "/dev/sdf"), (b, "/dev/sdg")):
        ec2.attach_now(vid, INSTANCE_ID, dev)
    made = ec2.create_snapshots(INSTANCE_ID, [b], {"role": "given", "snapshot_set": "s"}, "d")
    assert [(s["VolumeId"], s["State"]) for s in made] == [(a, "pending")]
    assert {t["Key"]: t["Value"] for t in made[0]["Tags"]} == {"mount_point": "/mnt/a", "role": "given", "snapshot_set": "s"}
    assert ec2.describe_snapshots([])[0]["State"] == "completed"  # the next poll


def test_pending_limit_delete_snapshot_of_an_ami_and_faults() -> None:
    ec2 = FakeEc2(snapshot_polls=100)
    vid = ec2.add_volume()
    for _ in range(5):
        ec2.create_snapshot(vid, "d", {})
    with pytest.raises(AwsError) as limit:
        ec2.create_snapshot(vid, "d", {})
    assert limit.value.code == "SnapshotCreationPerVolumeRateExceeded"
    used = ec2.add_snapshot("/mnt/a", {})
    ec2.images[used] = "ami-1"
    with pytest.raises(AwsError) as in_use:
        ec2.delete_snapshot(used)
    assert in_use.value.code == "InvalidSnapshot.InUse"
    ec2.fail("DeleteSnapshot", "RequestLimitExceeded", times=1)
    other = ec2.add_snapshot("/mnt/a", {})
    with pytest.raises(AwsError, match="RequestLimitExceeded"):
        ec2.delete_snapshot(other)
    ec2.delete_snapshot(other)  # the fault was for one call
    assert other not in ec2.snapshots and ec2.calls["DeleteSnapshot"] == 3


def test_devices_refuse_what_the_kernel_refuses() -> None:
    ec2 = FakeEc2()
    vid = ec2.add_volume()
    devices = FakeDevices(ec2)
    assert devices.find(vid, "/dev/sdf") is None
    ec2.attach_now(vid, INSTANCE_ID, "/dev/sdf")
    path = devices.find(vid, "/dev/sdf")
    assert path is not None and devices.probe(path).blank
    with pytest.raises(CommandError):
        devices.mount(path, "/mnt/a", "ext4", "defaults")  # nothing to mount yet
    devices.mkfs(path, "ext4", vid)
    with pytest.raises(OperationFailed, match="not blank"):
        devices.mkfs(path, "ext4", vid)
    devices.mount(path, "/mnt/a", "ext4", "defaults")
    assert devices.mount_at("/mnt/a") is not None and devices.major_minor(path) == devices.table["/mnt/a"].major_minor
    with pytest.raises(CommandError):
        devices.mount(path, "/mnt/a", "ext4", "defaults")
    devices.freeze("/mnt/a")
    with pytest.raises(OperationFailed, match="busy"):
        devices.freeze("/mnt/a")
    assert devices.thaw("/mnt/a") and not devices.thaw("/mnt/a")
    with pytest.raises(OperationFailed):
        devices.freeze("/mnt/b")
    devices.umount("/mnt/a")
    with pytest.raises(CommandError):
        devices.umount("/mnt/a")
    with pytest.raises(OperationFailed):
        devices.probe(Path("/dev/fake/vol-0nosuch"))
