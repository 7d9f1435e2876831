"""copy-snapshots against the lab's two regions: copies with every tag and their source, made once; an instance
in the destination restores the copies as a whole set with the bytes intact; retention and check-backups there."""

from __future__ import annotations

import json
import time
from typing import Any

from snaptastic_boot import tags
from tests.lab.agent import configure, ok, volumes

HOME, AWAY = "us-east-1", "us-west-2"


def in_region(lab: Any, region: str) -> Any:
    import boto3

    return boto3.client("ec2", endpoint_url=lab.endpoint, region_name=region, aws_access_key_id="lab",
                        aws_secret_access_key="lab")


def snapshots(client: Any) -> list[dict[str, Any]]:
    return client.describe_snapshots(OwnerIds=["self"])["Snapshots"]


def until_completed(client: Any, ids: list[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        found = client.describe_snapshots(SnapshotIds=ids)["Snapshots"]
        if all(s["State"] == "completed" for s in found):
            return
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


def snapshotted_home(lab: Any, **entry: Any) -> list[dict[str, Any]]:
    configure(lab, volumes(lab, 2), destination_regions=[AWAY], **entry)
    ok(lab.run("mount-snapshots", "solr"))
    for i in range(2):
        (lab.mount_root / f"data{i}" / "kept").write_text(f"volume {i}")
    ok(lab.run("make-snapshots", "solr", "--wait"))
    return snapshots(lab.ec2)


def test_copies_carry_every_tag_and_their_source_and_are_made_once(lab: Any) -> None:
    sources = snapshotted_home(lab)
    report = json.loads(ok(lab.run("copy-snapshots", "solr", "--json")).stdout)
    away = in_region(lab, AWAY)
    copies = snapshots(away)
    assert len(copies) == 2 and len(report["copies"][AWAY]) == 2
    by_source = {tags.tags_of(c)["source_snapshot_id"]: c for c in copies}
    assert set(by_source) == {s["SnapshotId"] for s in sources}
    for source in sources:
        copied = tags.tags_of(by_source[source["SnapshotId"]])
        assert copied == {**tags.tags_of(source), "source_snapshot_id": source["SnapshotId"], "source_region": HOME}
    assert lab.call_counts()["CopySnapshot"] == 2
    again = json.loads(ok(lab.run("copy-snapshots", "solr", "--json")).stdout)
    assert again["copies"] == {} and lab.call_counts()["CopySnapshot"] == 2 and len(snapshots(away)) == 2


def test_an_instance_in_the_destination_restores_the_copies_with_the_bytes(lab: Any) -> None:
    snapshotted_home(lab)
    ok(lab.run("copy-snapshots", "solr"))
    away = in_region(lab, AWAY)
    until_completed(away, [s["SnapshotId"] for s in snapshots(away)])
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    lab.new_instance(region=AWAY)  # the region is lost; the same identity boots in the other one
    result = ok(lab.run("mount-snapshots", "solr", "--json"))
    restored = {v["mount_point"]: v["snapshot_id"] for v in json.loads(result.stdout)["volumes"]}
    copy_ids = {s["SnapshotId"] for s in snapshots(away)}
    assert set(restored.values()) == copy_ids  # one whole set: the copies
    for i in range(2):
        assert (lab.mount_root / f"data{i}" / "kept").read_text() == f"volume {i}"
    volumes_there = away.describe_volumes()["Volumes"]
    assert {v["AvailabilityZone"] for v in volumes_there if tags.MOUNT_POINT in tags.tags_of(v)} == {AWAY + "a"}


def test_retention_and_check_backups_in_the_destination(lab: Any) -> None:
    away = in_region(lab, AWAY)

    def copied_set() -> set[str]:
        ok(lab.run("make-snapshots", "solr", "--wait"))
        ok(lab.run("copy-snapshots", "solr"))
        copies = [s for s in snapshots(away) if s["State"] != "completed"]
        until_completed(away, [s["SnapshotId"] for s in copies] or [s["SnapshotId"] for s in snapshots(away)])
        return {tags.tags_of(s)["snapshot_set"] for s in snapshots(away)}

    configure(lab, volumes(lab, 2), destination_regions=[AWAY], retention={"days": 0.0001, "keep": 1})  # 8.6 s
    ok(lab.run("mount-snapshots", "solr"))
    started = time.monotonic()
    (short,) = copied_set()
    configure(lab, volumes(lab, 2), destination_regions=[AWAY])  # the next set lives a week
    (lasting,) = copied_set() - {short}
    ok(lab.run("check-backups", "solr", "--region", AWAY, "--age", "1h"))
    time.sleep(max(0.0, 9.5 - (time.monotonic() - started)))
    out = ok(lab.run("clean", "snapshots", "solr", "--force", "--keep", "1")).stdout
    assert f"delete in {AWAY}:" in out
    for client in (lab.ec2, away):  # the expired set went in both regions; the newest stays in both
        assert {tags.tags_of(s)["snapshot_set"] for s in snapshots(client)} == {lasting}
    assert len(snapshots(away)) == 2
    elsewhere = lab.run("check-backups", "solr", "--region", "eu-west-1", "--age", "1h")
    assert elsewhere.returncode == 1 and "CRITICAL" in elsewhere.stdout  # a region without copies holds no backup


def test_the_destination_instance_attaches_late_and_its_termination_leaves_the_source_region_alone(lab: Any) -> None:
    """Attachments finishing on the lab's clock, and the files of terminated volumes, are the region's own."""
    snapshotted_home(lab)
    ok(lab.run("copy-snapshots", "solr"))
    away = in_region(lab, AWAY)
    until_completed(away, [s["SnapshotId"] for s in snapshots(away)])
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    home_volumes = [v["VolumeId"] for v in lab.ec2.describe_volumes()["Volumes"] if tags.MOUNT_POINT in tags.tags_of(v)]
    assert len(home_volumes) == 2
    lab.new_instance(region=AWAY)
    lab.faults.attach_stuck = 1.0  # each attachment completes a second later, when no call is being answered
    ok(lab.run("mount-snapshots", "solr"))
    lab.faults.attach_stuck = 0
    for i in range(2):
        assert (lab.mount_root / f"data{i}" / "kept").read_text() == f"volume {i}"
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    lab.terminate_instance()
    home = in_region(lab, HOME)
    assert {v["VolumeId"] for v in home.describe_volumes(VolumeIds=home_volumes)["Volumes"]} == set(home_volumes)
    for volume_id in home_volumes:  # their data stays where it is
        assert (lab.workdir / "volumes" / f"{volume_id}.img").exists()


def test_copies_under_way_are_not_made_again(lab: Any) -> None:
    sources = snapshotted_home(lab)
    lab.faults.snapshot_pending_seconds = 4.0  # the copies stay pending a while, as EBS's do
    ok(lab.run("copy-snapshots", "solr"))
    away = in_region(lab, AWAY)
    assert {s["State"] for s in snapshots(away)} == {"pending"}
    again = json.loads(ok(lab.run("copy-snapshots", "solr", "--dry-run", "--json")).stdout)
    assert again["steps"] == [] and again["pending"] == {AWAY: len(sources)}
    ok(lab.run("copy-snapshots", "solr"))
    assert lab.call_counts()["CopySnapshot"] == len(sources) and len(snapshots(away)) == len(sources)
    until_completed(away, [s["SnapshotId"] for s in snapshots(away)])
