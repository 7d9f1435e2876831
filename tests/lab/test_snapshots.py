"""make-snapshots, clean and check-backups through the lab."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.agent import configure, ok, run_json, volumes, wait_for_call


def write_probe(path: Path, timeout: float) -> float | None:
    """Seconds until a write to `path` went through (a frozen filesystem blocks it), or None."""
    done: list[float] = []
    started = time.monotonic()

    def write() -> None:
        with open(path, "w") as f:
            f.write("probe")
            f.flush()
            os.fsync(f.fileno())
        done.append(time.monotonic() - started)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    t.join(timeout)
    return done[0] if done else None


@pytest.fixture
def styled(lab_factory: Any, device_style: str) -> Any:
    return lab_factory(device_style=device_style)


def test_four_volumes_in_one_call_come_back_byte_for_byte(styled: Any) -> None:
    lab = styled
    configure(lab, volumes(lab, 4))
    ok(lab.run("mount-snapshots", "solr"))
    payloads = {i: os.urandom(100_000 + i) for i in range(4)}
    for i, data in payloads.items():
        (lab.mount_root / f"data{i}" / "blob").write_bytes(data)
    lab.reset_calls()
    made = run_json(lab, "make-snapshots", "solr")
    calls = [a for _, a in lab.calls]
    assert calls.count("CreateSnapshots") == 1 and "CreateSnapshot" not in calls
    assert len(set(made["snapshots"].values())) == 4
    assert made["freeze_ms"] > 0
    snaps = lab.ec2.describe_snapshots(SnapshotIds=list(made["snapshots"].values()))["Snapshots"]
    for snap in snaps:
        tags = {t["Key"]: t["Value"] for t in snap["Tags"]}
        assert made["snapshots"][tags["mount_point"]] == snap["SnapshotId"]
        assert tags["role"] == "solr" and tags["cluster"] == "solr-cluster" and tags["environment"] == "test"
        assert tags["instance_id"] == lab.instance_id
        created = dt.datetime.fromisoformat(tags["created"].replace("Z", "+00:00"))
        expires = dt.datetime.fromisoformat(tags["expires"].replace("Z", "+00:00"))
        assert expires - created == dt.timedelta(days=7)
        assert snap["Description"].startswith("solr-cluster snapshot of")
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    lab.terminate_instance()
    lab.new_instance()
    ok(lab.run("mount-snapshots", "solr"))
    for i, data in payloads.items():
        assert (lab.mount_root / f"data{i}" / "blob").read_bytes() == data


def test_other_data_volumes_and_boot_volume_are_excluded(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    other = lab.ec2.create_volume(AvailabilityZone=lab.availability_zone, Size=1)["VolumeId"]
    lab.ec2.attach_volume(VolumeId=other, InstanceId=lab.instance_id, Device="/dev/sdp")
    before = {s["SnapshotId"] for s in lab.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    made = run_json(lab, "make-snapshots", "solr")
    after = lab.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    new = [s for s in after if s["SnapshotId"] not in before]
    assert [s["SnapshotId"] for s in new] == list(made["snapshots"].values())
    assert all(s["VolumeId"] != other for s in new)


def test_fallback_to_one_call_per_volume_when_create_snapshots_is_refused(lab: Any) -> None:
    configure(lab, volumes(lab, 2))
    ok(lab.run("mount-snapshots", "solr"))
    lab.faults.fail_actions = {"CreateSnapshots": (403, "UnauthorizedOperation", "not allowed")}
    lab.reset_calls()
    made = run_json(lab, "make-snapshots", "solr")
    assert made["fallback"] is True
    assert [a for _, a in lab.calls].count("CreateSnapshot") == 2
    for mp, sid in made["snapshots"].items():
        snap = lab.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        assert {t["Key"]: t["Value"] for t in snap["Tags"]}["mount_point"] == mp


def test_thawed_after_a_failing_api_call(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    lab.faults.fail_actions = {"CreateSnapshots": (400, "InvalidParameterValue", "no")}
    result = lab.run("make-snapshots", "solr")
    assert result.returncode == 1 and "InvalidParameterValue" in result.stderr
    assert write_probe(lab.mount_root / "data0" / "after", 5) is not None


def test_thawed_by_watchdog_while_the_api_call_hangs(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    lab.faults.hang_actions = {"CreateSnapshots": 6.0}
    env = {**lab.env, "SNAPTASTIC_MAX_FREEZE": "1"}
    proc = subprocess.Popen(["snaptastic", "make-snapshots", "solr", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_call(lab, "CreateSnapshots")
    # Frozen now, the call is hanging: the write must go through well before the call returns.
    waited = write_probe(lab.mount_root / "data0" / "during", 4)
    assert waited is not None and waited < 4
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert '"watchdog_fired": true' in out


def test_sigkill_while_frozen_is_thawed_by_the_guard(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    lab.faults.hang_actions = {"CreateSnapshots": 20.0}
    proc = subprocess.Popen(["snaptastic", "make-snapshots", "solr"], env=lab.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_call(lab, "CreateSnapshots")
    proc.kill()
    proc.wait()
    assert write_probe(lab.mount_root / "data0" / "after-kill", 5) is not None


def test_sigterm_while_frozen_thaws_before_exit(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    lab.faults.hang_actions = {"CreateSnapshots": 20.0}
    proc = subprocess.Popen(["snaptastic", "make-snapshots", "solr"], env=lab.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_call(lab, "CreateSnapshots")
    proc.terminate()
    proc.wait(timeout=10)
    assert proc.returncode != 0
    assert write_probe(lab.mount_root / "data0" / "after-term", 2) is not None


def test_root_filesystem_freeze_refused(lab: Any) -> None:
    bind = lab.mount_root / "rootbind"
    bind.mkdir(parents=True)
    subprocess.run(["mount", "--bind", "/", str(bind)], check=True)
    try:
        configure(lab, [{"device": "/dev/sdf", "mount_point": str(bind), "size": 1}])
        lab.reset_calls()
        result = lab.run("make-snapshots", "solr")
        assert result.returncode == 1 and "root filesystem; refusing to freeze it" in result.stderr
        assert "CreateSnapshots" not in [a for _, a in lab.calls]
    finally:
        subprocess.run(["umount", str(bind)], check=True)


def test_not_mounted_is_a_clear_error(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    result = lab.run("make-snapshots", "solr")
    assert result.returncode == 1 and "is not mounted" in result.stderr


def _tagged_snapshot(lab: Any, volume_id: str, mount_point: str, expires: str, **tags: str) -> str:
    all_tags = {"role": "solr", "cluster": "solr-cluster", "environment": "test", "mount_point": mount_point,
                "expires": expires, **tags}
    sid = lab.ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    lab.ec2.create_tags(Resources=[sid], Tags=[{"Key": k, "Value": v} for k, v in all_tags.items()])
    return sid


def test_clean_keeps_newest_k_and_deletes_only_expired_matching(lab: Any) -> None:
    configure(lab, volumes(lab, 1), retention={"days": 7, "keep": 2})
    mp = str(lab.mount_root / "data0")
    vol = lab.ec2.create_volume(AvailabilityZone=lab.availability_zone, Size=1)["VolumeId"]
    past = "2020-01-01T00:00:00Z"
    old = [_tagged_snapshot(lab, vol, mp, past) for _ in range(3)]
    foreign = _tagged_snapshot(lab, vol, mp, past, cluster="other")
    untagged = lab.ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    seed_style = _tagged_snapshot(lab, vol, mp, "2020-01-01 00:00:00.000001")
    newest = [_tagged_snapshot(lab, vol, mp, past) for _ in range(2)]
    preview = ok(lab.run("clean", "snapshots", "solr", "--dry-run")).stdout
    assert preview.count("would delete snapshot") == 4
    assert ok(lab.run("clean", "snapshots", "--dry-run")).stdout == preview  # no name: every snapshotter
    ok(lab.run("clean", "snapshots", "solr", "--force"))
    left = {s["SnapshotId"] for s in lab.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert set(newest) <= left and foreign in left and untagged in left
    assert not (set(old) | {seed_style}) & left


def test_check_backups_fresh_stale_missing(lab: Any) -> None:
    configure(lab, volumes(lab, 2))
    ok(lab.run("mount-snapshots", "solr"))
    missing = lab.run("check-backups", "--age", "1d")
    assert missing.returncode == 1 and missing.stdout.count("CRITICAL") == 2 and "no completed snapshot" in missing.stdout
    ok(lab.run("make-snapshots", "solr"))
    fresh = lab.run("check-backups", "--age", "1d")
    assert fresh.returncode == 0 and fresh.stdout.count("OK ") == 2, fresh.stdout + fresh.stderr
    time.sleep(1.1)  # older than the age below, in real time
    stale = lab.run("check-backups", "--age", "1s", "--role", "solr", "--cluster", "solr-cluster", "--environment", "test")
    assert stale.returncode == 1 and stale.stdout.count("CRITICAL") == 2
    assert run_json(lab, "check-backups", "--age", "1d")[0]["ok"] is True


def test_volume_made_by_hand_is_snapshotted_with_explicit_tags_and_left_untagged(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    mp = lab.mount_root / "data0"
    vid = lab.ec2.create_volume(AvailabilityZone=lab.availability_zone, Size=1)["VolumeId"]
    lab.ec2.attach_volume(VolumeId=vid, InstanceId=lab.instance_id, Device="/dev/sdf")
    device = lab.device_for(vid)
    assert device is not None
    subprocess.run(["mkfs.ext4", "-q", str(device)], check=True)
    mp.mkdir(parents=True)
    subprocess.run(["mount", str(device), str(mp)], check=True)
    (mp / "legacy").write_text("old data")
    made = run_json(lab, "make-snapshots", "solr")
    assert made["fallback"] is True
    snap = lab.ec2.describe_snapshots(SnapshotIds=[made["snapshots"][str(mp)]])["Snapshots"][0]
    assert {t["Key"]: t["Value"] for t in snap["Tags"]}["mount_point"] == str(mp)
    assert not lab.ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0].get("Tags")
    subprocess.run(["umount", str(mp)], check=True)
    lab.ec2.detach_volume(VolumeId=vid)
    lab.new_instance()
    ok(lab.run("mount-snapshots", "solr"))
    assert (mp / "legacy").read_text() == "old data"


def test_no_freeze_and_wait(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    lab.faults.snapshot_pending_seconds = 1.5
    made = run_json(lab, "make-snapshots", "solr", "--no-freeze", "--wait")
    assert made["freeze_ms"] == 0
    sid = made["snapshots"][str(lab.mount_root / "data0")]
    assert lab.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] == "completed"



def test_check_backups_from_a_monitoring_host_off_ec2(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    ok(lab.run("make-snapshots", "solr"))
    lab.faults.imds_down = True
    env = {**lab.env, "AWS_REGION": lab.region, "AWS_ACCESS_KEY_ID": "monitor", "AWS_SECRET_ACCESS_KEY": "monitor",
           "SNAPTASTIC_IMDS_TIMEOUT": "0"}
    result = lab.run("check-backups", "--age", "1h", "--role", "solr", "--cluster", "solr-cluster",
                     "--environment", "test", env=env)
    assert result.returncode == 0 and result.stdout.startswith("OK "), result.stdout + result.stderr


def test_clean_skips_snapshots_an_ami_uses(lab: Any) -> None:
    configure(lab, volumes(lab, 1), retention={"days": 7, "keep": 1})
    mp = str(lab.mount_root / "data0")
    vol = lab.ec2.create_volume(AvailabilityZone=lab.availability_zone, Size=1)["VolumeId"]
    in_ami = _tagged_snapshot(lab, vol, mp, "2020-01-01T00:00:00Z")
    expired = _tagged_snapshot(lab, vol, mp, "2020-01-01T00:00:00Z")
    _tagged_snapshot(lab, vol, mp, "2020-01-01T00:00:00Z")
    lab.ec2.register_image(Name="uses-snapshot", RootDeviceName="/dev/sda1", BlockDeviceMappings=[
        {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": in_ami}}])
    ok(lab.run("clean", "snapshots", "solr", "--force"))
    left = {s["SnapshotId"] for s in lab.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert in_ami in left and expired not in left
