"""Faults: each run either completes, or stops with a clear error and leaves state a rerun converges from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.agent import configure, is_mounted, managed_lines, ok, our_volumes, run_json, volumes, wait_for_call

WRITES = ("CreateVolume", "AttachVolume", "DetachVolume", "DeleteVolume", "CreateTags", "ModifyInstanceAttribute",
          "CreateSnapshot", "CreateSnapshots", "DeleteSnapshot")


def short_waits(lab: Any) -> dict[str, str]:
    return {**lab.env, "SNAPTASTIC_WAIT_TIMEOUT": "2"}


def test_throttling_and_server_errors_are_absorbed(lab: Any) -> None:
    configure(lab, volumes(lab, 4))
    lab.faults.throttle_rate = 0.3
    lab.faults.error_rate = 0.1
    ok(lab.run("mount-snapshots", "solr", timeout=300))
    for i in range(4):
        (lab.mount_root / f"data{i}" / "f").write_text(str(i))
    ok(lab.run("make-snapshots", "solr", timeout=300))
    ok(lab.run("unmount-snapshots", "solr", "--yes", timeout=300))
    lab.new_instance()
    lab.reset_calls()
    report = json.loads(ok(lab.run("mount-snapshots", "solr", "--json", timeout=300)).stdout)
    lab.faults.throttle_rate = lab.faults.error_rate = 0.0  # the test's own reads below are not under test
    assert [(lab.mount_root / f"data{i}" / "f").read_text() for i in range(4)] == ["0", "1", "2", "3"]
    assert len([v for v in our_volumes(lab) if v["State"] == "in-use"]) == 4
    # The lab saw more requests than the agent made calls: the refused ones were retried.
    assert len(lab.calls) > sum(report["api_calls"].values())
    assert [a for _, a in lab.calls].count("CreateVolume") >= 4 and len(our_volumes(lab)) == 8


def test_volume_stuck_creating_then_rerun_reuses_it(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    lab.faults.volume_creating_seconds = 60
    result = lab.run("mount-snapshots", "solr", env=short_waits(lab))
    assert result.returncode == 1
    (vol,) = our_volumes(lab)
    assert f"volumes available: gave up after 2s waiting for {vol['VolumeId']} (/dev/sdf for" in result.stderr
    lab.faults.volume_creating_seconds = 0
    lab.backend.volumes[vol["VolumeId"]].lab_ready_at = 0.0  # creation finishes late
    ok(lab.run("mount-snapshots", "solr"))
    assert [v["VolumeId"] for v in our_volumes(lab)] == [vol["VolumeId"]]


def test_attachment_stuck_then_rerun_converges(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    lab.faults.attach_stuck = 8.0
    result = lab.run("mount-snapshots", "solr", env=short_waits(lab))
    assert result.returncode == 1
    (vol,) = our_volumes(lab)
    assert f"volumes attached: gave up after 2s waiting for {vol['VolumeId']} (/dev/sdf" in result.stderr
    assert not is_mounted(lab.mount_root / "data0")
    lab.faults.attach_stuck = 0
    # The next run finds the attachment still `attaching` (or done, on a slow machine), waits, and mounts.
    ok(lab.run("mount-snapshots", "solr"))
    assert [v["VolumeId"] for v in our_volumes(lab)] == [vol["VolumeId"]]
    assert is_mounted(lab.mount_root / "data0")


def test_device_never_appears_is_a_clear_error_and_nothing_is_formatted(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    lab.faults.device_never_appears = True
    result = lab.run("mount-snapshots", "solr", env=short_waits(lab))
    assert result.returncode == 1
    (vol,) = our_volumes(lab)
    assert "block devices: gave up" in result.stderr and vol["VolumeId"] in result.stderr and "/dev/sdf" in result.stderr
    assert "formatting" not in result.stderr
    assert lab.volume_file(vol["VolumeId"]).read_bytes().strip(b"\0") == b""


@pytest.mark.parametrize("action", ["CreateVolume", "AttachVolume", "ModifyInstanceAttribute"])
def test_sigkill_during_mount_snapshots_converges(lab: Any, action: str) -> None:
    configure(lab, volumes(lab, 2))
    lab.faults.hang_actions = {action: 30.0}
    proc = subprocess.Popen(["snaptastic", "mount-snapshots", "solr"], env=lab.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_call(lab, action)
    proc.kill()
    proc.wait()
    lab.faults.hang_actions = {}
    time.sleep(0.3)
    ok(lab.run("mount-snapshots", "solr"))
    ok(lab.run("mount-snapshots", "solr"))
    assert len(our_volumes(lab)) == 2
    assert len(managed_lines(lab)) == 2 and len(set(managed_lines(lab))) == 2
    assert all(is_mounted(lab.mount_root / f"data{i}") for i in range(2))


def test_sigterm_during_mount_snapshots_stops_at_a_safe_point(lab: Any) -> None:
    configure(lab, volumes(lab, 2))
    lab.faults.hang_actions = {"AttachVolume": 2.0}
    proc = subprocess.Popen(["snaptastic", "mount-snapshots", "solr"], env=lab.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_call(lab, "AttachVolume")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "stopped by SIGTERM after" in err and "run the command again to finish" in err
    assert not any(is_mounted(lab.mount_root / f"data{i}") for i in range(2))
    lab.faults.hang_actions = {}
    ok(lab.run("mount-snapshots", "solr"))
    assert len(our_volumes(lab)) == 2 and all(is_mounted(lab.mount_root / f"data{i}") for i in range(2))


def test_read_only_etc_keeps_old_fstab_and_rerun_converges(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    etc = Path(lab.fstab).parent
    before = Path(lab.fstab).read_text()
    subprocess.run(["mount", "--bind", str(etc), str(etc)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(etc)], check=True)
    try:
        result = lab.run("mount-snapshots", "solr")
        assert result.returncode == 1 and "the old file is unchanged" in result.stderr
        assert Path(lab.fstab).read_text() == before
    finally:
        subprocess.run(["umount", str(etc)], check=True)
    ok(lab.run("mount-snapshots", "solr"))
    assert len(managed_lines(lab)) == 1 and len(our_volumes(lab)) == 1


def test_full_disk_keeps_old_fstab(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    etc = Path(lab.fstab).parent
    before = Path(lab.fstab).read_text()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "full", str(etc)], check=True)
    try:
        Path(lab.fstab).write_text(before)
        subprocess.run(["dd", "if=/dev/zero", f"of={etc / 'filler'}", "bs=4k"], capture_output=True, check=False)
        result = lab.run("mount-snapshots", "solr")
        assert result.returncode == 1 and "No space left on device" in result.stderr
        assert Path(lab.fstab).read_text() == before
        assert [p.name for p in etc.iterdir() if p.name.endswith(".tmp")] == []
    finally:
        subprocess.run(["umount", str(etc)], check=True)


def _volume_for_this_instance(lab: Any, mount_point: str, content: bytes | None) -> str:
    tags = {"role": "solr", "cluster": "solr-cluster", "environment": "test", "mount_point": mount_point,
            "instance_id": lab.instance_id}
    vid = lab.ec2.create_volume(AvailabilityZone=lab.availability_zone, Size=1, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["VolumeId"]
    image = lab.volume_file(vid)
    if content is None:
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    else:
        with open(image, "r+b") as f:
            f.write(content)
    return vid


def test_filesystem_found_where_a_blank_volume_was_expected_is_never_formatted(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    mp = str(lab.mount_root / "data0")
    vid = _volume_for_this_instance(lab, mp, None)
    report = run_json(lab, "mount-snapshots", "solr")
    assert report["volumes"][0]["volume_id"] == vid and report["volumes"][0]["formatted"] is False
    assert is_mounted(mp) and (Path(mp) / "lost+found").is_dir()


def test_unknown_data_where_a_blank_volume_was_expected_is_refused(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    mp = str(lab.mount_root / "data0")
    junk = os.urandom(4096)
    vid = _volume_for_this_instance(lab, mp, junk)
    result = lab.run("mount-snapshots", "solr")
    assert result.returncode == 1 and "refusing" in result.stderr
    assert lab.volume_file(vid).read_bytes()[:4096] == junk
    assert not is_mounted(mp)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"snapshotters": {"solr": {"volumes": [{"device": "/dev/sdf", "mount_point": "/etc", "size": 1}]}}}, "system path"),
        ({"snapshotters": {"solr": {"volumes": [{"device": "/dev/sdf", "mount_point": "/mnt/a", "size": 1, "iops": 3000,
                                                 "volume_type": "gp2"}]}}}, "gp2 volumes take no iops"),
        ({"snapshotters": {"solr": {"volumes": [{"device": "/dev/sdf", "mount_point": "/mnt/a", "size": 1}]}, "x": 1}},
         "snapshotters.x"),
    ],
)
def test_bad_config_exit_2_changes_nothing(lab: Any, config: dict[str, Any], message: str) -> None:
    path = Path(lab.workdir) / "bad.json"
    path.write_text(json.dumps(config))
    before = Path(lab.fstab).read_text()
    lab.reset_calls()
    result = lab.run("mount-snapshots", "solr", "--config", str(path))
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert [a for _, a in lab.calls if a in WRITES] == [] and Path(lab.fstab).read_text() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--before", "last tuesday"], "--before: 'last tuesday' is not a timestamp"),
        (["--snapshot", "solr"], "--snapshot: 'solr' must look like"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2(lab: Any, args: list[str], message: str) -> None:
    configure(lab, volumes(lab, 1))
    result = lab.run("mount-snapshots", "solr", *args)
    assert result.returncode == 2 and message in result.stderr


def test_snapshot_of_another_cluster_refused_unless_forced(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    mp = str(lab.mount_root / "data0")
    vol = lab.ec2.create_volume(AvailabilityZone=lab.availability_zone, Size=1)["VolumeId"]
    subprocess.run(["mkfs.ext4", "-q", "-F", str(lab.volume_file(vol))], check=True)
    snap = lab.ec2.create_snapshot(VolumeId=vol, TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
        {"Key": "cluster", "Value": "other"}, {"Key": "mount_point", "Value": mp}]}])["SnapshotId"]
    result = lab.run("mount-snapshots", "solr", "--snapshot", f"{mp}={snap}")
    assert result.returncode == 2 and "belongs elsewhere" in result.stderr and our_volumes(lab) == []
    ok(lab.run("mount-snapshots", "solr", "--snapshot", f"{mp}={snap}", "--force"))
    assert is_mounted(mp)
