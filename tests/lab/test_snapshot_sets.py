"""One point in time per snapshotter, through the CLI: sets, their failures, retention, and the only copy."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tests.lab.agent import configure, ok, our_volumes, run_json, volumes


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def write_all(lab: Any, text: str, n: int = 3) -> None:
    for i in range(n):
        (lab.mount_root / f"data{i}" / "v").write_text(text)


def snapshot_run(lab: Any) -> dict[str, str]:
    """make-snapshots: mount point -> snapshot id."""
    return run_json(lab, "make-snapshots", "solr")["snapshots"]


def restore_on_new_instance(lab: Any, *extra: str) -> Any:
    lab.new_instance()
    return lab.run("mount-snapshots", "solr", *extra)


def contents(lab: Any, n: int = 3) -> list[str]:
    return [(lab.mount_root / f"data{i}" / "v").read_text() for i in range(n)]


@pytest.fixture
def two_sets(lab: Any) -> tuple[dict[str, str], dict[str, str]]:
    configure(lab, volumes(lab, 3))
    ok(lab.run("mount-snapshots", "solr"))
    write_all(lab, "first")
    first = snapshot_run(lab)
    write_all(lab, "second")
    second = snapshot_run(lab)
    return first, second


def test_every_snapshot_of_a_run_carries_one_set_tag(lab: Any, two_sets: Any) -> None:
    first, second = two_sets
    snaps = lab.ec2.describe_snapshots(SnapshotIds=[*first.values(), *second.values()])["Snapshots"]
    by_id = {s["SnapshotId"]: tags_of(s)["snapshot_set"] for s in snaps}
    assert len({by_id[i] for i in first.values()}) == 1 and len({by_id[i] for i in second.values()}) == 1
    assert by_id[next(iter(first.values()))] != by_id[next(iter(second.values()))]


@pytest.mark.parametrize("broken", ["error", "deleted"])
def test_a_broken_member_makes_the_whole_older_set_restore(lab: Any, two_sets: Any, broken: str) -> None:
    _first, second = two_sets
    victim = second[str(lab.mount_root / "data1")]
    if broken == "error":
        lab.fail_snapshot(victim)
    else:
        lab.ec2.delete_snapshot(SnapshotId=victim)
    result = ok(restore_on_new_instance(lab))
    assert contents(lab) == ["first"] * 3  # never second, second, first
    assert "skipping snapshot set" in result.stderr and "data1" in result.stderr


def test_a_pending_set_that_fails_during_the_wait_falls_back_in_the_same_run(lab: Any) -> None:
    configure(lab, volumes(lab, 3), pending_snapshot_wait=60)
    ok(lab.run("mount-snapshots", "solr"))
    write_all(lab, "first")
    snapshot_run(lab)
    write_all(lab, "second")
    lab.faults.snapshot_pending_seconds = 30
    second = snapshot_run(lab)
    lab.faults.snapshot_pending_seconds = 0
    # Long enough to be seen pending when the restore plans, even on a busy machine.
    lab.fail_snapshot(second[str(lab.mount_root / "data2")], after=8)
    result = ok(restore_on_new_instance(lab))
    assert contents(lab) == ["first"] * 3
    assert "restoring the previous complete snapshot set instead" in result.stderr


def test_a_pending_set_is_waited_for(lab: Any, two_sets: Any) -> None:
    write_all(lab, "third")
    lab.faults.snapshot_pending_seconds = 1.5
    snapshot_run(lab)
    ok(restore_on_new_instance(lab))
    assert contents(lab) == ["third"] * 3


def test_before_chooses_a_set_by_its_time(lab: Any, two_sets: Any) -> None:
    _first, second = two_sets
    taken = min(s["StartTime"] for s in lab.ec2.describe_snapshots(SnapshotIds=list(second.values()))["Snapshots"])
    before = (taken - dt.timedelta(milliseconds=1)).isoformat()  # just before the set's first member
    ok(restore_on_new_instance(lab, "--before", before))
    assert contents(lab) == ["first"] * 3


def test_a_mount_point_added_later_gets_an_empty_volume_and_a_warning(lab: Any, two_sets: Any) -> None:
    configure(lab, volumes(lab, 4))
    report = restore_on_new_instance(lab)
    ok(report)
    assert contents(lab) == ["second"] * 3
    assert "data3: no snapshot set covers it" in report.stderr
    assert list((lab.mount_root / "data3").iterdir()) == [Path(lab.mount_root / "data3" / "lost+found")]


def test_dry_run_shows_the_chosen_set(lab: Any, two_sets: Any) -> None:
    lab.new_instance()
    plan = run_json(lab, "mount-snapshots", "solr", "--dry-run")
    snap = lab.ec2.describe_snapshots(SnapshotIds=[plan["steps"][0]["snapshot"]["snapshot_id"]])["Snapshots"][0]
    assert plan["snapshot_set"] == tags_of(snap)["snapshot_set"]
    assert "snapshot set: " in ok(lab.run("mount-snapshots", "solr", "--dry-run")).stdout


def test_consistent_restore_off_restores_each_mount_point_on_its_own(lab: Any, two_sets: Any) -> None:
    _first, second = two_sets
    configure(lab, volumes(lab, 3), consistent_restore=False)
    lab.fail_snapshot(second[str(lab.mount_root / "data1")])
    ok(restore_on_new_instance(lab))
    assert contents(lab) == ["second", "first", "second"]


def test_retention_keeps_whole_sets_and_counts_a_broken_set_as_no_backup(lab: Any) -> None:
    configure(lab, volumes(lab, 2), retention={"days": 7, "keep": 1})
    ok(lab.run("mount-snapshots", "solr"))
    old = snapshot_run(lab)
    newest = snapshot_run(lab)
    lab.fail_snapshot(newest[str(lab.mount_root / "data1")])
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lab.ec2.create_tags(Resources=[*old.values(), *newest.values()], Tags=[{"Key": "expires", "Value": past}])
    plan = run_json(lab, "clean", "snapshots", "solr", "--dry-run")
    doomed = {d["resource_id"] for d in plan}
    # keep=1: the newest complete set is the old one, kept whole; the broken newest set protects nothing.
    assert doomed == set(newest.values())
    ok(lab.run("clean", "snapshots", "solr", "--force"))
    left = {s["SnapshotId"] for s in lab.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert set(old.values()) <= left and not (set(newest.values()) & left)


def test_unmount_then_mount_brings_every_byte_back(lab: Any) -> None:
    configure(lab, volumes(lab, 2))
    ok(lab.run("mount-snapshots", "solr"))
    write_all(lab, "written after the last snapshot", n=2)
    done = ok(lab.run("unmount-snapshots", "solr", "--yes")).stdout
    assert "snapshot snap-" in done
    ok(lab.run("mount-snapshots", "solr"))
    assert contents(lab, 2) == ["written after the last snapshot"] * 2


def test_clean_volumes_deletes_a_detached_volume_only_when_a_snapshot_holds_its_data(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    (detached,) = [v["VolumeId"] for v in our_volumes(lab)]
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    # A crashed run's leftover: available, made for this snapshotter, never unmounted by the agent.
    leftover = lab.ec2.create_volume(AvailabilityZone=lab.availability_zone, Size=1, TagSpecifications=[{
        "ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in {
            "role": "solr", "cluster": "solr-cluster", "environment": "test",
            "mount_point": str(lab.mount_root / "data0"), "instance_id": "i-gone"}.items()]}])["VolumeId"]
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2))
    for vid in (detached, leftover):
        lab.backend.volumes[vid].create_time = old.replace(tzinfo=None)
    out = ok(lab.run("clean", "volumes", "solr", "--dry-run")).stdout
    assert f"would delete volume {detached}" in out and f"keep volume {leftover}" in out
    assert "may hold writes no snapshot has" in out
    ok(lab.run("clean", "volumes", "solr", "--force"))
    left = {v["VolumeId"] for v in our_volumes(lab)}
    assert leftover in left and detached not in left


def test_make_snapshots_refuses_at_the_pending_limit_without_freezing(lab: Any) -> None:
    configure(lab, volumes(lab, 1, volume_type="st1", size=125))
    ok(lab.run("mount-snapshots", "solr"))
    lab.faults.snapshot_pending_seconds = 60
    snapshot_run(lab)
    lab.reset_calls()
    result = lab.run("make-snapshots", "solr")
    assert result.returncode == 1, result.stderr
    assert "pending snapshot" in result.stderr and "(1)" in result.stderr and "freeze window" not in result.stderr
    assert lab.call_counts()["CreateSnapshots"] == 0
