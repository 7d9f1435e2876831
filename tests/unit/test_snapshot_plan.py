from __future__ import annotations

import datetime as dt

import pytest

from snaptastic_boot.errors import OperationFailed, UnsafeOperation
from snaptastic_boot.model import Mount, Retention, SnapshotterSpec, VolumeSpec
from snaptastic_boot.plan import snapshot as snapshots

NOW = dt.datetime(2026, 11, 27, 12, tzinfo=dt.timezone.utc)
TAGS = {"role": "solr", "cluster": "c", "environment": "e"}
SPEC = SnapshotterSpec("solr", (VolumeSpec("/dev/sdf", "/mnt/a", 1), VolumeSpec("/dev/sdg", "/mnt/b", 1)), TAGS,
                       Retention(days=14, keep=3))
INSTANCE = {"InstanceId": "i-1", "RootDeviceName": "/dev/sda1", "BlockDeviceMappings": [
    {"DeviceName": "/dev/sda1", "Ebs": {"VolumeId": "vol-root"}},
    {"DeviceName": "/dev/sdf", "Ebs": {"VolumeId": "vol-a"}},
    {"DeviceName": "/dev/sdg", "Ebs": {"VolumeId": "vol-b"}},
    {"DeviceName": "/dev/sdp", "Ebs": {"VolumeId": "vol-other"}},
]}
LOCAL = {"vol-root": ("/dev/nvme0n1", "259:0"), "vol-a": ("/dev/nvme1n1", "259:1"), "vol-b": ("/dev/nvme2n1", "259:2"),
         "vol-other": ("/dev/nvme3n1", "259:3")}
MOUNTS = [Mount("/", "/dev/nvme0n1p1", "ext4", "259:9", "rw"), Mount("/mnt/a", "/dev/nvme1n1", "ext4", "259:1", "rw"),
          Mount("/mnt/b", "/dev/nvme2n1", "xfs", "259:2", "rw"), Mount("/srv/other", "/dev/nvme3n1", "ext4", "259:3", "rw")]


def plan(mounts=MOUNTS, local=LOCAL, spec=SPEC) -> snapshots.SnapshotPlan:
    return snapshots.plan_snapshots(spec, "c snapshot of /mnt/a /mnt/b", INSTANCE, mounts, local, now=NOW)


def test_maps_mount_points_to_volumes_and_excludes_the_rest() -> None:
    p = plan()
    assert [(t.mount_point, t.volume_id, t.device) for t in p.targets] == [("/mnt/a", "vol-a", "/dev/sdf"), ("/mnt/b", "vol-b", "/dev/sdg")]
    assert p.exclude_volume_ids == ("vol-other",)  # the boot volume goes by ExcludeBootVolume
    set_id = p.tags.pop("snapshot_set")
    assert p.tags == {**TAGS, "instance_id": "i-1", "created": "2026-11-27T12:00:00Z", "expires": "2026-12-11T12:00:00Z"}
    assert set_id.startswith("20261127T120000Z-") and plan().tags["snapshot_set"] != set_id  # one per run


def test_not_mounted_is_an_error() -> None:
    with pytest.raises(OperationFailed, match="/mnt/b is not mounted"):
        plan(mounts=MOUNTS[:2])


def test_not_an_ebs_volume_is_an_error() -> None:
    mounts = [*MOUNTS[:2], Mount("/mnt/b", "tmpfs", "tmpfs", "0:55", "rw")]
    with pytest.raises(OperationFailed, match="not an EBS volume attached to i-1"):
        plan(mounts=mounts)


def test_root_filesystem_refused() -> None:
    mounts = [*MOUNTS[:2], Mount("/mnt/b", "/dev/nvme0n1p1", "ext4", "259:9", "rw")]
    with pytest.raises(UnsafeOperation, match="root filesystem"):
        plan(mounts=mounts)


def test_boot_volume_refused() -> None:
    mounts = [*MOUNTS[:2], Mount("/mnt/b", "/dev/nvme0n1", "ext4", "259:0", "rw")]
    with pytest.raises(UnsafeOperation, match="boot volume vol-root"):
        plan(mounts=mounts)


def test_missing_tags_are_noted_per_volume() -> None:
    tagged = [{"Key": k, "Value": v} for k, v in {**TAGS, "mount_point": "/mnt/a"}.items()]
    p = snapshots.with_missing_tags(plan(), TAGS, [{"VolumeId": "vol-a", "Tags": tagged}, {"VolumeId": "vol-b"}])
    assert p.targets[0].missing_tags == {}
    assert p.targets[1].missing_tags == {**TAGS, "mount_point": "/mnt/b"}
