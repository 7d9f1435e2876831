"""mount-snapshots and unmount-snapshots through the lab, in both device styles."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.agent import configure, is_mounted, managed_lines, ok, our_volumes, run_json, volumes

WRITES = ("CreateVolume", "AttachVolume", "DetachVolume", "DeleteVolume", "CreateTags", "ModifyInstanceAttribute",
          "CreateSnapshot", "CreateSnapshots", "DeleteSnapshot")


def writes(lab: Any) -> list[str]:
    return [a for _, a in lab.calls if a in WRITES]


@pytest.fixture
def styled(lab_factory: Any, device_style: str) -> Any:
    return lab_factory(device_style=device_style)


def test_first_boot_creates_formats_mounts_and_writes_fstab(styled: Any) -> None:
    lab = styled
    env = configure(lab, volumes(lab, 2))
    report = run_json(lab, "mount-snapshots", "solr")
    assert [v["formatted"] for v in report["volumes"]] == [True, True]
    for i in range(2):
        mp = lab.mount_root / f"data{i}"
        assert is_mounted(mp)
        (mp / "probe").write_text("x")
    lines = managed_lines(lab)
    assert [line.split()[1] for line in lines] == [str(lab.mount_root / "data0"), str(lab.mount_root / "data1")]
    assert all(line.startswith("UUID=") and "nofail" in line and "x-systemd.device-timeout=" in line for line in lines)
    # The lab's own root line names a disk this machine does not have; check the whole file parses and
    # that our entries, on their own, verify cleanly. A fresh blkid cache: libblkid rescans devices only
    # every 200 s, and lab devices come and go faster than that (udev's by-uuid links do that job on EC2).
    env = {**env, "BLKID_FILE": str(Path(lab.workdir) / "blkid.tab")}
    whole = subprocess.run(["findmnt", "--verify", "--tab-file", str(lab.fstab)], capture_output=True, text=True, env=env)
    assert "0 parse errors" in whole.stderr, whole.stderr
    ours = Path(lab.workdir) / "ours.fstab"
    ours.write_text("\n".join(lines) + "\n")
    verify = subprocess.run(["findmnt", "--verify", "--tab-file", str(ours)], capture_output=True, text=True, env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "no errors or warnings" in verify.stdout, verify.stdout
    vols = our_volumes(lab)
    assert len(vols) == 2
    tags = {t["Key"]: t["Value"] for t in vols[0]["Tags"]}
    assert {"role", "cluster", "environment", "mount_point", "instance_id", "created"} <= set(tags)
    assert tags["instance_id"] == lab.instance_id
    instance = lab.ec2.describe_instances(InstanceIds=[lab.instance_id])["Reservations"][0]["Instances"][0]
    dot = {m["DeviceName"]: m["Ebs"]["DeleteOnTermination"] for m in instance["BlockDeviceMappings"]}
    assert dot["/dev/sdf"] is True and dot["/dev/sdg"] is True


def test_rerun_changes_nothing(styled: Any) -> None:
    lab = styled
    configure(lab, volumes(lab, 2))
    ok(lab.run("mount-snapshots", "solr"))
    fstab_before = Path(lab.fstab).read_text()
    lab.reset_calls()
    report = run_json(lab, "mount-snapshots", "solr")
    assert [v["action"] for v in report["volumes"]] == ["mounted", "mounted"]
    assert writes(lab) == []
    assert Path(lab.fstab).read_text() == fstab_before
    assert len(our_volumes(lab)) == 2


def unmount_snapshot(lab: Any) -> str:
    """unmount-snapshots of one volume; the id of the snapshot it took before detaching."""
    done = run_json(lab, "unmount-snapshots", "solr", "--yes")["done"]
    (line,) = [d for d in done if d.startswith("snapshot snap-")]
    return str(line.split()[1])


def test_restore_on_a_new_instance_brings_data_back_byte_for_byte(styled: Any) -> None:
    lab = styled
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    payload = os.urandom(300_000)
    (lab.mount_root / "data0" / "blob").write_bytes(payload)
    ok(lab.run("make-snapshots", "solr"))
    taken = unmount_snapshot(lab)
    lab.terminate_instance()
    lab.new_instance()
    report = run_json(lab, "mount-snapshots", "solr")
    assert report["volumes"][0]["snapshot_id"] == taken
    assert report["volumes"][0]["formatted"] is False
    assert (lab.mount_root / "data0" / "blob").read_bytes() == payload


def test_four_volumes_restore_within_the_call_budget(lab: Any) -> None:
    configure(lab, volumes(lab, 4))
    ok(lab.run("mount-snapshots", "solr"))
    for i in range(4):
        (lab.mount_root / f"data{i}" / "id").write_text(f"volume {i}")
    ok(lab.run("make-snapshots", "solr"))
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    lab.new_instance()
    lab.reset_calls()
    result = ok(lab.run("mount-snapshots", "solr"))
    calls = [a for _, a in lab.calls]
    assert len(calls) <= 2 * 4 + 6, calls
    assert calls.count("CreateVolume") == 4 and calls.count("DescribeSnapshots") == 1
    assert "EC2 API calls" in result.stderr
    for i in range(4):
        assert (lab.mount_root / f"data{i}" / "id").read_text() == f"volume {i}"


def test_newest_snapshot_wins_and_pending_one_is_waited_for(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    mp = lab.mount_root / "data0"
    ok(lab.run("mount-snapshots", "solr"))
    (mp / "v").write_text("1")
    ok(lab.run("make-snapshots", "solr"))
    (mp / "v").write_text("2")
    lab.faults.snapshot_pending_seconds = 2.0
    newest = unmount_snapshot(lab)  # the unmount's snapshot is the newest, and still pending
    lab.new_instance()
    report = run_json(lab, "mount-snapshots", "solr")
    assert report["volumes"][0]["snapshot_id"] == newest
    assert (mp / "v").read_text() == "2"


def test_dry_run_changes_nothing(lab: Any) -> None:
    configure(lab, volumes(lab, 2))
    before = Path(lab.fstab).read_text()
    lab.reset_calls()
    out = ok(lab.run("mount-snapshots", "solr", "--dry-run")).stdout
    assert "create empty 1 GiB gp3" in out and "fstab: UUID=" in out
    assert writes(lab) == [] and our_volumes(lab) == []
    assert Path(lab.fstab).read_text() == before and not is_mounted(lab.mount_root / "data0")
    plan = run_json(lab, "mount-snapshots", "solr", "--dry-run")
    assert [s["action"] for s in plan["steps"]] == ["create", "create"]


def _kill_when(lab: Any, action: str, args: list[str]) -> None:
    """Start the agent, SIGKILL it while the lab holds `action` unanswered."""
    lab.faults.hang_actions = {action: 30.0}
    argv = ["snaptastic", *args]
    proc = subprocess.Popen(argv, env=lab.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while action not in [a for _, a in lab.calls] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert action in [a for _, a in lab.calls]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lab.faults.hang_actions = {}


@pytest.mark.parametrize("killed_at", ["AttachVolume", "ModifyInstanceAttribute"], ids=["create-attach", "attach-mount"])
def test_killed_run_converges_on_rerun_without_extra_volume(styled: Any, killed_at: str) -> None:
    lab = styled
    configure(lab, volumes(lab, 2))
    _kill_when(lab, killed_at, ["mount-snapshots", "solr"])
    assert len(our_volumes(lab)) == 2
    time.sleep(0.5)
    report = run_json(lab, "mount-snapshots", "solr")
    assert len(our_volumes(lab)) == 2
    assert all(is_mounted(lab.mount_root / f"data{i}") for i in range(2))
    assert [v["formatted"] for v in report["volumes"]] == [True, True]
    assert len(managed_lines(lab)) == 2


def test_unmount_leaves_no_mount_no_fstab_line_no_attachment(styled: Any) -> None:
    lab = styled
    configure(lab, volumes(lab, 2))
    ok(lab.run("mount-snapshots", "solr"))
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    assert not any(is_mounted(lab.mount_root / f"data{i}") for i in range(2))
    assert managed_lines(lab) == []
    assert all(v["State"] == "available" and not v.get("Attachments") for v in our_volumes(lab))
    ok(lab.run("mount-snapshots", "solr"))
    ok(lab.run("unmount-snapshots", "solr", "--yes", "--delete"))
    assert [v for v in our_volumes(lab) if not any(t["Key"] == "detached" for t in v["Tags"])] == []


def test_unmount_without_terminal_needs_yes(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    result = lab.run("unmount-snapshots", "solr", stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "--yes" in result.stderr
    assert is_mounted(lab.mount_root / "data0")


def test_second_concurrent_run_exits_4(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    lock = Path(lab.env["SNAPTASTIC_RUN_DIR"]) / "snaptastic.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        lab.reset_calls()
        result = lab.run("mount-snapshots", "solr")
    assert result.returncode == 4 and "another snaptastic run" in result.stderr
    assert writes(lab) == [] and our_volumes(lab) == []


def test_pinned_snapshot_and_point_in_time(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    mp = lab.mount_root / "data0"
    ok(lab.run("mount-snapshots", "solr"))
    (mp / "v").write_text("old")
    first = run_json(lab, "make-snapshots", "solr")["snapshots"][str(mp)]
    # Start times are distinct to the millisecond, so a cut taken between two runs falls between them.
    cut = dt.datetime.now(dt.timezone.utc).isoformat()
    (mp / "v").write_text("new")
    ok(lab.run("make-snapshots", "solr"))
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    lab.new_instance()
    ok(lab.run("mount-snapshots", "solr", "--before", cut))
    assert (mp / "v").read_text() == "old"
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    lab.new_instance()
    ok(lab.run("mount-snapshots", "solr", "--snapshot", f"{mp}={first}"))
    assert (mp / "v").read_text() == "old"


def _has_cap_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


@pytest.mark.parametrize("filesystem", ["xfs", "ext4"])
def test_larger_size_grows_the_filesystem(lab: Any, filesystem: str) -> None:
    configure(lab, volumes(lab, 1, size=1, filesystem=filesystem))
    ok(lab.run("mount-snapshots", "solr"))
    (lab.mount_root / "data0" / "keep").write_text("kept")
    ok(lab.run("make-snapshots", "solr"))
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    configure(lab, volumes(lab, 1, size=2, filesystem=filesystem))
    lab.new_instance()
    result = ok(lab.run("mount-snapshots", "solr", "--json"))
    grown = json.loads(result.stdout)["volumes"][0]["grown"]
    assert (lab.mount_root / "data0" / "keep").read_text() == "kept"
    if filesystem == "ext4" and not _has_cap_sys_resource():
        # Online ext4 resize needs CAP_SYS_RESOURCE; without it the agent keeps going at the old size.
        assert grown is False and "could not grow the filesystem" in result.stderr
        return
    assert grown is True
    total = os.statvfs(lab.mount_root / "data0")
    assert total.f_blocks * total.f_frsize > 1.5 * 2**30


def test_xfs_volumes(lab: Any) -> None:
    configure(lab, volumes(lab, 1, filesystem="xfs"))
    ok(lab.run("mount-snapshots", "solr"))
    (lab.mount_root / "data0" / "x").write_text("xfs data")
    ok(lab.run("make-snapshots", "solr"))
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    lab.new_instance()
    ok(lab.run("mount-snapshots", "solr"))
    assert (lab.mount_root / "data0" / "x").read_text() == "xfs data"
    assert " xfs " in managed_lines(lab)[0]


def test_reboot_mounts_the_same_volumes_again(styled: Any) -> None:
    lab = styled
    configure(lab, volumes(lab, 2))
    first = run_json(lab, "mount-snapshots", "solr")
    (lab.mount_root / "data0" / "before-reboot").write_text("still here")
    for i in range(2):  # a reboot: the mounts are gone, the attachments stay
        subprocess.run(["umount", str(lab.mount_root / f"data{i}")], check=True)
    lab.reset_calls()
    again = run_json(lab, "mount-snapshots", "solr")
    assert [v["volume_id"] for v in again["volumes"]] == [v["volume_id"] for v in first["volumes"]]
    assert [v["action"] for v in again["volumes"]] == ["mount", "mount"]
    assert [v["formatted"] for v in again["volumes"]] == [False, False]
    assert "CreateVolume" not in [a for _, a in lab.calls]
    assert (lab.mount_root / "data0" / "before-reboot").read_text() == "still here"
    assert len(managed_lines(lab)) == 2


def test_xfs_copy_next_to_its_origin_gets_nouuid(lab: Any) -> None:
    a = {"device": "/dev/sdf", "mount_point": str(lab.mount_root / "a"), "size": 1, "filesystem": "xfs"}
    b = {"device": "/dev/sdg", "mount_point": str(lab.mount_root / "b"), "size": 1, "filesystem": "xfs"}
    path = Path(lab.workdir) / "two.json"
    path.write_text(json.dumps({"snapshotters": {"a": {"volumes": [a]}, "b": {"volumes": [b]}}}))
    lab.env["SNAPTASTIC_CONFIG"] = str(path)
    ok(lab.run("mount-snapshots", "a"))
    (lab.mount_root / "a" / "x").write_text("origin")
    snap = run_json(lab, "make-snapshots", "a")["snapshots"][a["mount_point"]]
    ok(lab.run("mount-snapshots", "b", "--snapshot", f"{b['mount_point']}={snap}", "--force"))
    assert (lab.mount_root / "b" / "x").read_text() == "origin"
    options = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", b["mount_point"]], capture_output=True, text=True).stdout
    assert "nouuid" in options
    options_a = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", a["mount_point"]], capture_output=True, text=True).stdout
    assert "nouuid" not in options_a


def test_unmount_confirmation_read_from_a_pipe(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    refused = lab.run("unmount-snapshots", "solr", input="n\n")
    assert refused.returncode == 1 and is_mounted(lab.mount_root / "data0")
    ok(lab.run("unmount-snapshots", "solr", input="yes\n"))
    assert not is_mounted(lab.mount_root / "data0")


def test_snapshot_made_by_the_original_snaptastic_is_restored(lab: Any) -> None:
    """The original tagged snapshots with the same keys (and its own `expires`/`created` format)."""
    configure(lab, volumes(lab, 1))
    mp = str(lab.mount_root / "data0")
    old = lab.ec2.create_volume(AvailabilityZone=lab.availability_zone, Size=1)["VolumeId"]
    image = lab.volume_file(old)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["debugfs", "-w", "-R", "mkdir legacy", str(image)], check=True, capture_output=True)
    tags = {"role": "solr", "cluster": "solr-cluster", "environment": "test", "mount_point": mp,
            "instance_id": "i-0123456789abcdef0", "created": "2013-05-01 12:34:56.123456",
            "expires": "2013-05-08 12:34:56.123456"}
    snap = lab.ec2.create_snapshot(VolumeId=old, Description="solr-cluster snapshot of " + mp, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["SnapshotId"]
    report = run_json(lab, "mount-snapshots", "solr")
    assert report["volumes"][0]["snapshot_id"] == snap and report["volumes"][0]["formatted"] is False
    assert (Path(mp) / "legacy").is_dir()


def test_mounting_over_files_warns(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    mp = lab.mount_root / "data0"
    mp.mkdir(parents=True)
    (mp / "written-before-the-mount").write_text("x")
    result = ok(lab.run("mount-snapshots", "solr"))
    assert "is not empty (written-before-the-mount); the mount hides those files" in result.stderr
