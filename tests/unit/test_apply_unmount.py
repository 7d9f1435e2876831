"""Unmounter (unmount-snapshots, applying) against the in-memory EC2 and devices: unmounted, snapshotted as
one set, detached and marked, and the next mount-snapshots restores every byte from that snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from snaptastic_boot import tags
from snaptastic_boot.apply import waits
from snaptastic_boot.apply.restore import Restorer
from snaptastic_boot.apply.unmount import Unmounter
from snaptastic_boot.errors import AwsError, OperationFailed
from snaptastic_boot.model import SnapshotterSpec, VolumeSpec
from snaptastic_boot.plan import restore, unmount
from snaptastic_boot.plan.restore import Action
from tests.unit.fakes import INSTANCE_ID, ZONE, FakeDevices, FakeEc2

TAGS = {"role": "solr", "cluster": "search", "environment": "test"}
MOUNTS = ("/mnt/solr", "/mnt/logs")
SPEC = SnapshotterSpec("solr", (VolumeSpec("/dev/sdf", "/mnt/solr", 1), VolumeSpec("/dev/sdg", "/mnt/logs", 1)), TAGS)
OTHERS = b"LABEL=root / ext4 defaults 0 1\n"


@pytest.fixture(autouse=True)
def no_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waits, "SLEEPS", (0.0,))


class Host:
    def __init__(self, tmp_path: Path) -> None:
        self.ec2 = FakeEc2()
        self.devices = FakeDevices(self.ec2)
        self.fstab = tmp_path / "fstab"
        self.fstab.write_bytes(OTHERS)

    def ours(self) -> list[dict[str, Any]]:
        return self.ec2.describe_volumes(filters=tags.volume_filters(SPEC, INSTANCE_ID))

    def restore(self) -> None:
        snapshots = self.ec2.describe_snapshots(tags.snapshot_filters(SPEC))
        plan = restore.plan_restore(SPEC, INSTANCE_ID, ZONE, snapshots, self.ours(), self.devices.mounts())
        Restorer(self.ec2, self.devices, self.fstab).apply(plan)

    def unmount(self, delete: bool = False) -> dict[str, Any]:
        plan = unmount.plan_unmount(SPEC, INSTANCE_ID, self.ours(), self.devices.mounts(), delete=delete,
                                    description="search snapshot")
        self.ec2.calls.clear()
        self.ec2.log.clear()
        return Unmounter(self.ec2, self.devices, self.fstab).apply(plan)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    h = Host(tmp_path)
    h.restore()
    for mp in MOUNTS:
        h.devices.files(mp)["data"] = f"written to {mp} after the last make-snapshots"
    return h


def test_unmount_snapshots_then_detaches_and_marks_and_the_next_restore_brings_every_byte_back(host: Host) -> None:
    host.ec2.detach_polls = 2  # detaching takes polls: the agent waits before it marks the volumes
    volumes = set(host.ec2.data_volumes())
    report = host.unmount()
    assert set(host.devices.table) == {"/"} and host.fstab.read_bytes() == OTHERS
    assert [a for a in host.ec2.log if not a.startswith("Describe")] == \
        ["CreateSnapshot", "CreateSnapshot", "DetachVolume", "DetachVolume", "CreateTags"]
    for vid in volumes:
        v = host.ec2.volumes[vid]
        assert v["State"] == "available" and not v["Attachments"] and "detached" in tags.tags_of(v)
    snaps = list(host.ec2.snapshots.values())
    assert {s["VolumeId"] for s in snaps} == volumes
    assert len({tags.tags_of(s)["snapshot_set"] for s in snaps}) == 1 and all(tags.belongs(s, TAGS) for s in snaps)
    assert len(report["done"]) == 2 + 1 + 2 + 2  # unmounted x2, fstab, snapshot x2, detached x2

    # The next mount-snapshots does not reattach what was detached on purpose: it restores the snapshots.
    host.restore()
    assert not {v["VolumeId"] for v in host.ec2.attached()} & volumes
    assert {mp: host.devices.files(mp)["data"] for mp in MOUNTS} == {
        mp: f"written to {mp} after the last make-snapshots" for mp in MOUNTS}


def test_delete_deletes_the_volumes_only_after_their_snapshot(host: Host) -> None:
    volumes = set(host.ec2.data_volumes())
    host.unmount(delete=True)
    assert not host.ec2.data_volumes()
    assert host.ec2.log.index("DeleteVolume") > max(i for i, a in enumerate(host.ec2.log) if a == "CreateSnapshot")
    assert {s["VolumeId"] for s in host.ec2.snapshots.values()} == volumes


def test_a_failed_snapshot_leaves_the_volumes_attached_and_deletes_nothing(host: Host) -> None:
    host.ec2.fail("CreateSnapshot", "InternalError")
    with pytest.raises(AwsError, match="InternalError"):
        host.unmount(delete=True)
    assert all(v["Attachments"] for v in host.ec2.data_volumes().values()) and len(host.ec2.data_volumes()) == 2
    assert host.ec2.calls["DetachVolume"] == 0 and host.ec2.calls["DeleteVolume"] == 0
    # A rerun of mount-snapshots mounts them again, with their data.
    host.ec2.heal("CreateSnapshot")
    host.restore()
    assert "after the last make-snapshots" in host.devices.files("/mnt/solr")["data"]


def test_an_attached_volume_that_is_not_mounted_is_still_snapshotted_and_detached(host: Host) -> None:
    host.devices.umount("/mnt/logs")
    host.unmount()
    assert host.devices.events.count("umount /mnt/logs") == 1  # only the test's own
    assert host.ec2.calls["CreateSnapshot"] == 2 and host.ec2.calls["DetachVolume"] == 2


def test_a_rerun_after_a_complete_unmount_changes_nothing(host: Host) -> None:
    host.unmount()
    report = host.unmount()
    assert host.ec2.mutating_calls == 0 and report["done"] == []


def test_the_restore_plan_never_reattaches_a_detached_volume(host: Host) -> None:
    host.unmount()
    plan = restore.plan_restore(SPEC, INSTANCE_ID, ZONE, host.ec2.describe_snapshots(tags.snapshot_filters(SPEC)),
                                host.ours(), host.devices.mounts())
    assert all(s.action == Action.CREATE and s.snapshot for s in plan.steps)


def test_delete_snapshots_a_volume_detached_behind_the_agents_back_before_deleting_it(host: Host) -> None:
    """Detached from the console or by a force-detach, it may hold writes that no snapshot has: --delete
    deletes only volumes whose data this run's snapshot holds."""
    solr = next(vid for vid, v in host.ec2.data_volumes().items() if tags.tags_of(v)["mount_point"] == "/mnt/solr")
    host.devices.umount("/mnt/solr")
    host.ec2.detach_volume(solr)
    host.ec2.describe_volumes()  # the detachment completes
    plan = unmount.plan_unmount(SPEC, INSTANCE_ID, host.ours(), host.devices.mounts(), delete=True)
    assert f"/mnt/solr: remove fstab entry, snapshot {solr}, delete {solr}" in plan.render()
    host.unmount(delete=True)
    assert not host.ec2.data_volumes() and host.ec2.calls["DetachVolume"] == 1  # only the attached one
    assert {s["VolumeId"] for s in host.ec2.snapshots.values()} >= {solr}
    host.restore()
    assert "after the last make-snapshots" in host.devices.files("/mnt/solr")["data"]


def test_a_volume_mounted_in_another_namespace_is_neither_snapshotted_nor_detached(host: Host) -> None:
    held = next(v["VolumeId"] for v in host.ours() if tags.tags_of(v)[tags.MOUNT_POINT] == "/mnt/logs")
    host.devices.held_elsewhere.add(held)
    with pytest.raises(OperationFailed, match="still mounted or in use elsewhere"):
        host.unmount()
    assert not [a for a in host.ec2.log if not a.startswith("Describe")]
    # The rerun finds /mnt/logs unmounted here, but still held there: it checks before it changes anything.
    with pytest.raises(OperationFailed, match="/mnt/logs"):
        host.unmount()
    assert not [a for a in host.ec2.log if not a.startswith("Describe")]
    host.devices.held_elsewhere.clear()
    host.unmount()
    assert all(host.ec2.volumes[v]["State"] == "available" for v in host.ec2.data_volumes())
