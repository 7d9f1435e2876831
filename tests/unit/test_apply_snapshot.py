"""SnapshotMaker (make-snapshots, applying) against the in-memory EC2 and devices: every target frozen during
one CreateSnapshots call, always thawed, the fallbacks, and the tags the next boot searches for."""

from __future__ import annotations

from typing import Any

import pytest

from snaptastic_boot import tags
from snaptastic_boot.apply import freeze, waits
from snaptastic_boot.apply.snapshot import SnapshotMaker, SnapshotReport, local_devices
from snaptastic_boot.errors import AwsError, OperationFailed, UnsafeOperation
from snaptastic_boot.model import Mount, SnapshotterSpec, VolumeSpec
from snaptastic_boot.plan import snapshot
from tests.unit.fakes import INSTANCE_ID, ROOT_DEVICE, Disk, FakeDevices, FakeEc2

TAGS = {"role": "solr", "cluster": "search", "environment": "test"}
MOUNTS = {"/mnt/solr": "/dev/sdf", "/mnt/logs": "/dev/sdg"}
SPEC = SnapshotterSpec("solr", tuple(VolumeSpec(dev, mp, 1) for mp, dev in MOUNTS.items()), TAGS)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waits, "SLEEPS", (0.0,))
    monkeypatch.setattr(freeze, "_start_guard", lambda *_: None)  # a process: not here


class Host:
    def __init__(self, tagged: bool = True) -> None:
        self.ec2 = FakeEc2()
        self.devices = FakeDevices(self.ec2)
        self.volume = {mp: self.mounted(mp, dev, {**TAGS, "mount_point": mp, "instance_id": INSTANCE_ID} if tagged else {})
                       for mp, dev in MOUNTS.items()}
        self.frozen_during: dict[str, set[str]] = {}  # what was frozen when each snapshot call came in, first time
        self.ec2.when("CreateSnapshots", lambda: self.note_frozen("CreateSnapshots"))
        self.ec2.when("CreateSnapshot", lambda: self.note_frozen("CreateSnapshot"))

    def note_frozen(self, action: str) -> None:
        self.frozen_during.setdefault(action, set(self.devices.frozen))

    def mounted(self, mount_point: str, device: str, volume_tags: dict[str, str]) -> str:
        vid = self.ec2.add_volume(tags=volume_tags, disk=Disk("ext4", f"uuid-{mount_point}", {}, 1))
        self.ec2.attach_now(vid, INSTANCE_ID, device)
        self.devices.mount(FakeDevices.path(vid), mount_point, "ext4", "defaults")
        return vid

    def plan(self, spec: SnapshotterSpec = SPEC, freeze: bool = True) -> snapshot.SnapshotPlan:
        """What make-snapshots reads and checks before it freezes; the calls it took are forgotten."""
        instance = self.ec2.describe_instance(INSTANCE_ID)
        plan = snapshot.plan_snapshots(spec, "search snapshot", instance, self.devices.mounts(),
                                       local_devices(self.devices, instance), freeze=freeze)
        volumes = self.ec2.describe_volumes(volume_ids=[t.volume_id for t in plan.targets])
        plan = snapshot.with_missing_tags(plan, spec.filter_tags, volumes)
        pending = self.ec2.describe_snapshots([{"Name": "volume-id", "Values": [t.volume_id for t in plan.targets]},
                                               {"Name": "status", "Values": ["pending"]}])
        snapshot.check_pending_limits(plan, volumes, pending)
        self.ec2.calls.clear()
        self.ec2.log.clear()
        self.devices.events.clear()
        return plan

    def apply(self, plan: snapshot.SnapshotPlan | None = None, **kw: Any) -> SnapshotReport:
        wait = kw.pop("wait", False)
        return SnapshotMaker(self.ec2, self.devices, **kw).apply(plan or self.plan(), wait=wait)

    def thaws(self) -> list[str]:
        return sorted(e for e in self.devices.events if e.startswith("thaw"))


def test_every_target_is_frozen_during_one_call_and_thawed_after() -> None:
    host = Host()
    other = host.mounted("/mnt/scratch", "/dev/sdh", {})  # attached and mounted, but not this snapshotter's
    report = host.apply()
    assert host.ec2.calls == {"CreateSnapshots": 1}
    assert host.frozen_during["CreateSnapshots"] == set(MOUNTS) and not host.devices.frozen
    assert host.thaws() == sorted(f"thaw {mp}" for mp in MOUNTS)
    # Flushed first, all of them, then frozen; never the boot volume nor a volume the config does not name.
    assert [e.split()[0] for e in host.devices.events] == ["flush"] * 2 + ["freeze"] * 2 + ["thaw"] * 2
    snaps = {mp: host.ec2.snapshots[sid] for mp, sid in report.snapshots.items()}
    assert {mp: s["VolumeId"] for mp, s in snaps.items()} == host.volume
    assert not {host.ec2.root_volume(), other} & {s["VolumeId"] for s in host.ec2.snapshots.values()}
    # Tags: the volume's own (mount_point) and the run's; one set id for the whole run.
    got = {mp: tags.tags_of(s) for mp, s in snaps.items()}
    assert all(t["mount_point"] == mp and tags.belongs(s, TAGS) for (mp, t), s in zip(got.items(), snaps.values()))
    assert len({t["snapshot_set"] for t in got.values()}) == 1
    assert all({"created", "expires", "instance_id"} <= set(t) for t in got.values())
    assert not report.fallback and not report.watchdog_fired


@pytest.mark.parametrize("code", ["InternalError", "SnapshotCreationPerVolumeRateExceeded", "RequestLimitExceeded"])
def test_a_failing_call_still_thaws_everything(code: str) -> None:
    host = Host()
    host.ec2.fail("CreateSnapshots", code)
    with pytest.raises(AwsError, match=code):
        host.apply()
    assert host.frozen_during["CreateSnapshots"] == set(MOUNTS)
    assert not host.devices.frozen and host.thaws() == sorted(f"thaw {mp}" for mp in MOUNTS)
    assert not host.ec2.snapshots and host.ec2.calls["CreateSnapshot"] == 0  # no fallback on these


def test_a_freeze_that_fails_thaws_the_others_and_takes_no_snapshot() -> None:
    host = Host()
    host.devices.refuse_freeze.add("/mnt/logs")
    with pytest.raises(OperationFailed, match="cannot freeze /mnt/logs"):
        host.apply()
    assert not host.devices.frozen and host.thaws() == ["thaw /mnt/solr"]
    assert host.ec2.calls == {} and not host.ec2.snapshots


@pytest.mark.parametrize("code", ["UnauthorizedOperation", "UnsupportedOperation"])
def test_a_refused_create_snapshots_falls_back_to_one_call_per_volume_while_frozen(code: str) -> None:
    host = Host()
    host.ec2.fail("CreateSnapshots", code)
    report = host.apply()
    assert report.fallback and host.ec2.calls["CreateSnapshot"] == 2
    assert host.frozen_during["CreateSnapshot"] == set(MOUNTS) and not host.devices.frozen
    for mp, sid in report.snapshots.items():
        snap = host.ec2.snapshots[sid]
        assert snap["VolumeId"] == host.volume[mp] and tags.belongs(snap, TAGS) and tags.tags_of(snap)["mount_point"] == mp


def test_volumes_without_the_tags_get_snapshots_with_explicit_tags_and_are_never_retagged() -> None:
    host = Host(tagged=False)
    plan = host.plan()
    assert all(t.missing_tags for t in plan.targets)
    report = host.apply(plan)
    assert host.ec2.calls == {"CreateSnapshot": 2}  # no CreateSnapshots (it would copy no tags), no CreateTags
    assert all(not host.ec2.volumes[vid]["Tags"] for vid in host.volume.values())
    assert host.frozen_during["CreateSnapshot"] == set(MOUNTS)
    for mp, sid in report.snapshots.items():
        snap = host.ec2.snapshots[sid]
        assert tags.belongs(snap, {**TAGS, "mount_point": mp}) and "snapshot_set" in tags.tags_of(snap)
    # The next boot's search finds them.
    found = host.ec2.describe_snapshots(tags.snapshot_filters(SPEC))
    assert {s["SnapshotId"] for s in found} == set(report.snapshots.values())


def test_no_freeze_takes_the_snapshots_unfrozen() -> None:
    host = Host()
    report = host.apply(host.plan(freeze=False))
    assert host.frozen_during["CreateSnapshots"] == set() and not any("freeze" in e for e in host.devices.events)
    assert set(report.snapshots) == set(MOUNTS)


def test_wait_waits_for_completion_and_reports_a_failed_snapshot() -> None:
    host = Host()
    host.ec2.snapshot_polls = 2
    report = host.apply(wait=True)
    assert {host.ec2.snapshots[s]["State"] for s in report.snapshots.values()} == {"completed"}
    assert host.ec2.calls["DescribeSnapshots"] >= 3

    host.ec2.snapshot_outcome = "error"
    with pytest.raises(OperationFailed, match="failed"):
        host.apply(wait=True)
    assert not host.devices.frozen


def test_the_root_filesystem_is_refused_before_anything_is_frozen() -> None:
    host = Host()
    root = host.devices.table["/"]
    host.devices.table["/mnt/solr"] = Mount("/mnt/solr", root.source, "ext4", root.major_minor, "rw")  # a bind mount of /
    with pytest.raises(UnsafeOperation, match="/mnt/solr"):
        host.plan()
    assert not host.devices.frozen and not host.ec2.snapshots


def test_a_volume_at_ebs_pending_limit_is_refused_before_anything_is_frozen() -> None:
    host = Host()
    for _ in range(5):
        host.ec2.add_snapshot("/mnt/logs", TAGS, minutes_ago=1, state="pending", volume_id=host.volume["/mnt/logs"])
    with pytest.raises(OperationFailed, match=host.volume["/mnt/logs"]):
        host.plan()
    assert not host.devices.frozen and not any(e.startswith("freeze") for e in host.devices.events)


def test_the_boot_volume_is_never_among_the_snapshots_even_when_nothing_is_excluded() -> None:
    host = Host()
    made = host.ec2.create_snapshots(INSTANCE_ID, [], {"k": "v"}, "d")
    assert {s["VolumeId"] for s in made} == set(host.volume.values())
    assert ROOT_DEVICE not in {host.ec2.volumes[s["VolumeId"]]["Attachments"][0]["Device"] for s in made}
