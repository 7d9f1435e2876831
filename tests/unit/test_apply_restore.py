"""Restorer (mount-snapshots, applying) against the in-memory EC2 and devices: what ends up created, attached,
formatted, mounted and in fstab, and what a rerun or a stop between steps leaves."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from snaptastic_boot import tags
from snaptastic_boot.apply import waits
from snaptastic_boot.apply.restore import Restorer, RestoreReport
from snaptastic_boot.errors import AwsError, Stopped, UnsafeOperation, WaitTimeout
from snaptastic_boot.model import SnapshotterSpec, VolumeSpec, canonical_device
from snaptastic_boot.plan import restore
from snaptastic_boot.plan.restore import Action
from snaptastic_boot.system import fstab
from snaptastic_boot.system.stopping import GracefulStop
from tests.unit.fakes import INSTANCE_ID, ZONE, Disk, FakeDevices, FakeEc2

TAGS = {"role": "solr", "cluster": "search", "environment": "test"}
MOUNTS = ("/mnt/solr", "/mnt/logs")
SPEC = SnapshotterSpec("solr", (VolumeSpec("/dev/sdf", "/mnt/solr", 2), VolumeSpec("/dev/sdg", "/mnt/logs", 1)), TAGS)
FSTAB = b"# static file system information\nLABEL=root / ext4 defaults 0 1\n"


@pytest.fixture(autouse=True)
def no_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waits, "SLEEPS", (0.0,))


class Host:
    """One instance: the fakes, an fstab in a temporary directory, and the command's way to plan."""

    def __init__(self, tmp_path: Path, spec: SnapshotterSpec = SPEC) -> None:
        self.ec2 = FakeEc2()
        self.devices = FakeDevices(self.ec2)
        self.fstab = tmp_path / "fstab"
        self.fstab.write_bytes(FSTAB)
        self.spec = spec

    def plan(self, **kw: Any) -> restore.RestorePlan:
        """What mount-snapshots reads before it decides, then the plan; the calls it took are forgotten."""
        snapshots = self.ec2.describe_snapshots(tags.snapshot_filters(self.spec))
        ours = self.ec2.describe_volumes(filters=tags.volume_filters(self.spec, INSTANCE_ID))
        instance = self.ec2.describe_instance(INSTANCE_ID)
        mappings = instance["BlockDeviceMappings"]
        occupied = {canonical_device(m["DeviceName"]): m["Ebs"]["VolumeId"] for m in mappings}
        flags = {m["Ebs"]["VolumeId"]: m["Ebs"]["DeleteOnTermination"] for m in mappings}
        plan = restore.plan_restore(self.spec, INSTANCE_ID, ZONE, snapshots, ours, self.devices.mounts(),
                                    occupied=occupied, delete_on_termination=flags, **kw)
        self.ec2.calls.clear()
        self.ec2.log.clear()
        return plan

    def apply(self, plan: restore.RestorePlan | None = None, **kw: Any) -> RestoreReport:
        return Restorer(self.ec2, self.devices, self.fstab, **kw).apply(plan or self.plan())

    def mkfs(self) -> list[str]:
        return [e for e in self.devices.events if e.startswith("mkfs")]

    def fstab_uuids(self) -> dict[str, str]:
        """Mount point -> UUID of the agent's fstab entries."""
        out = {}
        for line in self.fstab.read_text().splitlines():
            if line.startswith("UUID="):
                uuid, mount_point = line.split()[:2]
                out[mount_point] = uuid.removeprefix("UUID=")
        return out


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_first_boot_creates_waits_attaches_formats_mounts_and_writes_fstab(host: Host) -> None:
    host.ec2.create_polls = host.ec2.attach_polls = 2  # EC2 takes its time: the agent must wait for both
    report = host.apply()
    made = host.ec2.data_volumes()
    assert len(made) == 2 and host.ec2.calls["CreateVolume"] == 2 and host.ec2.calls["AttachVolume"] == 2
    assert host.ec2.calls["DescribeVolumes"] >= 6  # three polls for creating, three for attaching
    assert sorted(host.mkfs()) == sorted(f"mkfs {vid}" for vid in made)
    by_mount = {tags.tags_of(v)["mount_point"]: v for v in made.values()}
    assert {mp: v["Attachments"][0]["Device"] for mp, v in by_mount.items()} == {"/mnt/solr": "/dev/sdf", "/mnt/logs": "/dev/sdg"}
    assert {mp: v["Size"] for mp, v in by_mount.items()} == {"/mnt/solr": 2, "/mnt/logs": 1}
    assert all(tags.tags_of(v)["instance_id"] == INSTANCE_ID for v in made.values())
    assert host.ec2.delete_on_termination() == {"/dev/sdf": True, "/dev/sdg": True}
    assert {mp: m.source for mp, m in host.devices.table.items() if mp != "/"} == {
        mp: str(FakeDevices.path(v["VolumeId"])) for mp, v in by_mount.items()}
    # fstab: the lines that were there, then one entry per mount point naming the filesystem just made.
    assert host.fstab.read_bytes().startswith(FSTAB)
    assert host.fstab_uuids() == {mp: host.ec2.disks[v["VolumeId"]].uuid for mp, v in by_mount.items()}
    assert report.fstab_changed and all(v.formatted and v.action == "create" for v in report.volumes)
    # Create all, then attach all, then one ModifyInstanceAttribute: never one volume's whole path at a time.
    mutating = [a for a in host.ec2.log if not a.startswith("Describe")]
    assert mutating == ["CreateVolume", "CreateVolume", "AttachVolume", "AttachVolume", "ModifyInstanceAttribute"]


def test_a_rerun_changes_nothing(host: Host) -> None:
    host.apply()
    before, events = host.fstab.read_bytes(), list(host.devices.events)
    plan = host.plan()
    assert [s.action for s in plan.steps] == [Action.MOUNTED, Action.MOUNTED]
    report = host.apply(plan)
    assert host.ec2.mutating_calls == 0 and host.devices.events == events
    assert host.fstab.read_bytes() == before and not report.fstab_changed


def test_restore_takes_the_newest_complete_set_and_never_formats(host: Host) -> None:
    for mp in MOUNTS:
        host.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "old"}, minutes_ago=300, files={"v": "old"})
        host.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "new"}, minutes_ago=60, files={"v": "new"})
    host.ec2.add_snapshot("/mnt/solr", {**TAGS, "snapshot_set": "newest"}, minutes_ago=5, files={"v": "newest"})
    failed = host.ec2.add_snapshot("/mnt/logs", {**TAGS, "snapshot_set": "newest"}, minutes_ago=5, state="error")
    report = host.apply()
    assert not host.mkfs() and not any(v.formatted for v in report.volumes)
    assert {mp: host.devices.files(mp)["v"] for mp in MOUNTS} == {"/mnt/solr": "new", "/mnt/logs": "new"}
    assert failed not in {v.snapshot_id for v in report.volumes}
    # The fstab entry names the filesystem the snapshot held.
    assert host.fstab_uuids() == {mp: host.devices.probe(Path(host.devices.table[mp].source)).uuid for mp in MOUNTS}


def test_a_newer_pending_set_is_waited_for_and_restored(host: Host) -> None:
    for mp in MOUNTS:
        host.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "old"}, minutes_ago=300, files={"v": "old"})
        sid = host.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "new"}, minutes_ago=1, state="pending", files={"v": "new"})
        host.ec2.scripted[sid] = ["pending", "pending", "completed"]
    plan = host.plan()
    assert len(plan.wait_pending) == 2
    host.apply(plan)
    assert host.ec2.calls["DescribeSnapshots"] >= 2
    assert {host.devices.files(mp)["v"] for mp in MOUNTS} == {"new"} and not host.mkfs()


@pytest.mark.parametrize("disk", [Disk(pttype="gpt"), Disk(fstype="unknown-data"), Disk(fstype="LVM2_member", uuid="x")],
                         ids=["partition-table", "unknown-data", "lvm"])
def test_a_device_that_is_not_blank_is_never_formatted_or_mounted(host: Host, disk: Disk) -> None:
    """The agent's own empty volume (it would format a blank one) holds something it does not know."""
    for mp, dev in (("/mnt/solr", "/dev/sdf"), ("/mnt/logs", "/dev/sdg")):
        vid = host.ec2.add_volume(tags={**TAGS, "mount_point": mp, "instance_id": INSTANCE_ID}, disk=disk.copy())
        host.ec2.attach_now(vid, INSTANCE_ID, dev)
    plan = host.plan()
    assert all(s.action == Action.MOUNT and s.format_if_blank for s in plan.steps)
    with pytest.raises(UnsafeOperation, match="refusing to format or mount"):
        host.apply(plan)
    assert not host.mkfs() and set(host.devices.table) == {"/"} and host.fstab.read_bytes() == FSTAB


def test_a_blank_volume_made_from_a_snapshot_is_refused_not_formatted(host: Host) -> None:
    for mp in MOUNTS:
        host.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "s1"}, fstype=None)
    with pytest.raises(UnsafeOperation, match="refusing to format"):
        host.apply()
    assert not host.mkfs() and set(host.devices.table) == {"/"} and host.fstab.read_bytes() == FSTAB


@pytest.mark.parametrize(
    ("signal_at", "done", "attached", "set_flags"),
    [
        (None, "waiting for snapshots", 0, False),
        ("CreateVolume", "creating volumes", 0, False),
        ("AttachVolume", "attaching volumes", 2, True),
    ],
)
def test_a_stop_between_steps_leaves_a_state_the_rerun_finishes(host: Host, signal_at: str | None, done: str,
                                                                 attached: int, set_flags: bool) -> None:
    stop = GracefulStop()
    if signal_at is None:
        stop.signum = signal.SIGTERM
    else:
        host.ec2.when(signal_at, lambda: setattr(stop, "signum", signal.SIGTERM))
    with pytest.raises(Stopped, match=f"stopped by SIGTERM after {done}"):
        host.apply(stop=stop)
    made = host.ec2.data_volumes()
    assert len(made) == (0 if signal_at is None else 2)
    assert sum(bool(v["Attachments"]) for v in made.values()) == attached
    assert bool(host.ec2.calls["ModifyInstanceAttribute"]) == set_flags
    assert not host.mkfs() and set(host.devices.table) == {"/"} and host.fstab.read_bytes() == FSTAB

    # The next run (the unit restarted, or the next boot) finishes the job with the same volumes.
    host.apply()
    assert len(host.ec2.data_volumes()) == 2 and set(host.devices.table) == {"/", *MOUNTS}
    assert len(host.mkfs()) == 2 and set(host.fstab_uuids()) == set(MOUNTS)
    assert host.ec2.delete_on_termination() == {"/dev/sdf": True, "/dev/sdg": True}


def test_a_device_that_never_appears_fails_the_wait_and_formats_nothing(host: Host) -> None:
    host.ec2.when("AttachVolume", lambda: host.devices.missing.update(host.ec2.data_volumes()))
    with pytest.raises(WaitTimeout, match="no block device appeared"):
        host.apply(wait_timeout=0.05)
    assert not host.mkfs() and host.fstab.read_bytes() == FSTAB


def test_an_attachment_point_taken_after_the_plan_is_refused_by_ec2(host: Host) -> None:
    plan = host.plan()
    foreign = host.ec2.add_volume()
    host.ec2.attach_now(foreign, INSTANCE_ID, "/dev/xvdf")  # /dev/sdf by another name
    with pytest.raises(AwsError, match="Attachment point /dev/sdf is already in use") as caught:
        host.apply(plan)
    assert caught.value.code == "InvalidParameterValue"
    assert host.ec2.volumes[foreign]["Attachments"][0]["Device"] == "/dev/xvdf" and not host.mkfs()


def test_an_xfs_copy_next_to_its_original_is_mounted_with_nouuid(tmp_path: Path) -> None:
    spec = SnapshotterSpec("solr", (VolumeSpec("/dev/sdf", "/mnt/solr", 1, filesystem="xfs"),), TAGS)
    host = Host(tmp_path, spec)
    sid = host.ec2.add_snapshot("/mnt/solr", TAGS, fstype="xfs")
    twin = host.ec2.add_volume(disk=host.ec2.disks[sid].copy())
    host.ec2.attach_now(twin, INSTANCE_ID, "/dev/sdh")
    host.devices.mount(FakeDevices.path(twin), "/mnt/original", "xfs", "defaults")
    host.apply()
    assert host.devices.table["/mnt/solr"].options == "defaults,nouuid"
    assert host.devices.table["/mnt/original"].options == "defaults"


def test_files_in_the_mount_point_are_hidden_not_removed(host: Host, caplog: pytest.LogCaptureFixture) -> None:
    host.devices.directories["/mnt/solr"] = ["lost+found", "stale.log"]
    host.apply()
    assert "/mnt/solr is not empty (lost+found, stale.log)" in caplog.text
    assert host.devices.directories["/mnt/solr"] == ["lost+found", "stale.log"]


def test_fstab_lines_of_others_are_kept_byte_for_byte(host: Host) -> None:
    theirs = b"# static file system information\nLABEL=root / ext4 defaults 0 1\n/dev/sdz /mnt/logs ext4 defaults 0 2\n"
    host.fstab.write_bytes(theirs)
    host.apply()
    text = host.fstab.read_bytes()
    assert text.startswith(theirs) and set(host.fstab_uuids()) == {"/mnt/solr"}
    assert fstab.managed_mount_points(text) == ["/mnt/solr"]


@pytest.mark.parametrize("first_run", ["call-failed", "attach-wait-gave-up"])
def test_delete_on_termination_is_set_by_the_rerun_when_the_first_run_did_not(host: Host, first_run: str) -> None:
    """Left unset, the volumes outlive the instance, and clean volumes keeps them (no detached mark)."""
    if first_run == "call-failed":
        host.ec2.fail("ModifyInstanceAttribute", "InternalError", times=1)
        with pytest.raises(AwsError, match="InternalError"):
            host.apply()
    else:
        host.ec2.attach_polls = 3
        with pytest.raises(WaitTimeout, match="volumes attached"):
            host.apply(wait_timeout=0)
    assert host.ec2.delete_on_termination() == {"/dev/sdf": False, "/dev/sdg": False}
    plan = host.plan()
    assert {s.action for s in plan.steps} == {Action.MOUNT if first_run == "call-failed" else Action.AWAIT_ATTACHMENT}
    assert all(s.set_delete_on_termination for s in plan.steps) and "set DeleteOnTermination True" in plan.render()
    host.apply(plan)
    assert host.ec2.delete_on_termination() == {"/dev/sdf": True, "/dev/sdg": True}
    assert set(host.devices.table) == {"/", *MOUNTS}
    host.apply()  # and once they are mounted, a rerun changes nothing
    assert host.ec2.mutating_calls == 0


def test_after_a_reboot_the_volumes_are_mounted_again_without_a_changing_call(host: Host) -> None:
    host.apply()
    for mp in MOUNTS:
        host.devices.umount(mp)  # a reboot: the mounts are gone, the attachments stay
    plan = host.plan()
    assert [(s.action, s.set_delete_on_termination) for s in plan.steps] == [(Action.MOUNT, False)] * 2
    host.apply(plan)
    assert host.ec2.mutating_calls == 0 and set(host.devices.table) == {"/", *MOUNTS}
