"""reuse_volumes through the CLI: a replaced instance's volumes come back with every write, as a whole."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from snaptastic_lab.namespace import own_namespace_argv
from tests.lab.agent import configure, ok, our_volumes, volumes, wait_for_call


def reuse(lab: Any, n: int = 2) -> None:
    configure(lab, volumes(lab, n, delete_on_termination=False), reuse_volumes=True)


def first_life(lab: Any, n: int = 2) -> dict[str, str]:
    """Mount, snapshot, write after the snapshot, and end as an instance does: unmounted, then gone."""
    reuse(lab, n)
    ok(lab.run("mount-snapshots", "solr"))
    for i in range(n):
        (lab.mount_root / f"data{i}" / "v").write_text("in the snapshot")
    ok(lab.run("make-snapshots", "solr"))
    for i in range(n):
        (lab.mount_root / f"data{i}" / "v").write_text("written after the last snapshot")
    left = {str(lab.mount_root / f"data{i}"): v["VolumeId"] for i in range(n)
            for v in our_volumes(lab, str(lab.mount_root / f"data{i}"))}
    # The instance shuts down cleanly: its file systems are written out, then unmounted (an unmount alone
    # leaves the data in memory while another mount namespace, a test starting a container, holds a copy).
    os.sync()
    for i in range(n):
        subprocess.run(["umount", str(lab.mount_root / f"data{i}")], check=True)
    return left


def left_available(lab: Any, left: dict[str, str], timeout: float = 60) -> None:
    """Until the volumes of a terminated instance are `available` (EC2 detaches them on its own time)."""
    deadline = time.monotonic() + timeout
    while any(v["State"] != "available" for v in lab.ec2.describe_volumes(VolumeIds=list(left.values()))["Volumes"]):
        assert time.monotonic() < deadline, "the terminated instance's volumes never became available"
        time.sleep(0.1)


def contents(lab: Any, n: int = 2) -> set[str]:
    return {(lab.mount_root / f"data{i}" / "v").read_text() for i in range(n)}


def tags_of(volume: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in volume.get("Tags") or []}


def test_a_replaced_instances_volumes_are_reattached_with_every_write(lab: Any) -> None:
    left = first_life(lab)
    lab.terminate_instance()
    left_available(lab, left)
    lab.new_instance()
    lab.reset_calls()
    result = ok(lab.run("mount-snapshots", "solr"))
    assert contents(lab) == {"written after the last snapshot"}
    assert lab.call_counts()["CreateVolume"] == 0 and "reattached" in result.stderr
    vols = lab.ec2.describe_volumes(VolumeIds=list(left.values()))["Volumes"]
    assert {tags_of(v)["instance_id"] for v in vols} == {lab.instance_id}
    assert all(v["Attachments"][0]["InstanceId"] == lab.instance_id for v in vols)


def test_the_loser_of_a_race_restores_from_snapshots(lab: Any) -> None:
    left = first_life(lab)
    old = lab.instance_id
    lab.terminate_instance()
    winner = lab.new_instance()
    lab.new_instance()  # this agent's instance; the winner boots beside it
    first, second = (left[mp] for mp in sorted(left))
    lab.faults.hang_actions = {"AttachVolume": 3.0}
    agent = subprocess.Popen(["snaptastic", "mount-snapshots", "solr"], env=lab.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_for_call(lab, "AttachVolume")  # planned, and reaching for the first volume of the group...
    lab.ec2.attach_volume(VolumeId=first, InstanceId=winner, Device="/dev/sdf")  # ...which the winner gets first
    lab.faults.hang_actions = {}
    _out, err = agent.communicate(timeout=120)
    assert agent.returncode == 0, err
    assert "was taken by another instance first" in err
    assert contents(lab) == {"in the snapshot"}
    untouched = lab.ec2.describe_volumes(VolumeIds=[second])["Volumes"][0]
    assert untouched["State"] == "available" and tags_of(untouched)["instance_id"] == old


def test_volumes_left_in_another_zone_are_not_moved(lab: Any) -> None:
    reuse(lab, 1)
    ok(lab.run("mount-snapshots", "solr"))
    (lab.mount_root / "data0" / "v").write_text("in the snapshot")
    ok(lab.run("make-snapshots", "solr"))
    ok(lab.run("unmount-snapshots", "solr", "--yes", "--delete"))
    elsewhere = lab.ec2.create_volume(AvailabilityZone="us-east-1b", Size=1, TagSpecifications=[{
        "ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in {
            "role": "solr", "cluster": "solr-cluster", "environment": "test", "mount_point": str(lab.mount_root / "data0"),
            "instance_id": "i-0elsewhere"}.items()]}])["VolumeId"]
    lab.new_instance()
    result = ok(lab.run("mount-snapshots", "solr"))
    assert contents(lab, 1) == {"in the snapshot"}
    assert f"{elsewhere} left by i-0elsewhere is in us-east-1b" in result.stderr


def test_two_agents_racing_for_one_set_of_leftovers(lab: Any) -> None:
    """Two cluster members boot at once, each a real agent on its own instance, and race for one group."""
    left = first_life(lab)
    lab.terminate_instance()
    left_available(lab, left)
    lab.new_instance()
    other = lab.add_neighbour()
    # Each agent in a mount namespace of its own, as on two machines: the same mount points do not collide.
    agents = [subprocess.Popen(own_namespace_argv(["snaptastic", "mount-snapshots", "solr", "--json"]),
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for env in (lab.env, other.env)]
    reports = []
    for agent in agents:
        out, err = agent.communicate(timeout=180)
        assert agent.returncode == 0, err
        reports.append(json.loads(out))
    actions = sorted({v["action"] for v in r["volumes"]}.pop() for r in reports)
    assert actions == ["create", "reattach"], reports
    winner = next(r for r in reports if r["volumes"][0]["action"] == "reattach")
    assert sorted(v["volume_id"] for v in winner["volumes"]) == sorted(left.values())
    vols = lab.ec2.describe_volumes(VolumeIds=list(left.values()))["Volumes"]
    assert {v["Attachments"][0]["InstanceId"] for v in vols} == {winner["instance_id"]}
    assert {tags_of(v)["instance_id"] for v in vols} == {winner["instance_id"]}
    loser = next(r for r in reports if r is not winner)
    assert all(v["snapshot_id"] for v in loser["volumes"])  # restored from the snapshots, nothing attached twice
