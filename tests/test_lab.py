"""The lab behaves like EC2, EBS and IMDS: proved through boto3, HTTP and real block devices.

These tests need root (loop devices, mknod, mount); the lab fixtures skip otherwise.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from snaptastic_lab import DEFAULT_USERDATA, Lab

LabFactory = Callable[..., Lab]


def http(lab: Lab, method: str, path: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(lab.imds_endpoint.rstrip("/") + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def token(lab: Lab, ttl: str = "60") -> str:
    status, body = http(lab, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    assert status == 200
    return body.decode()


def imds_get(lab: Lab, path: str) -> tuple[int, bytes]:
    return http(lab, "GET", path, {"X-aws-ec2-metadata-token": token(lab)})


def new_volume(lab: Lab, size: int = 1, **kw: Any) -> str:
    volume = lab.ec2.create_volume(Size=size, AvailabilityZone=lab.availability_zone, **kw)
    return str(volume["VolumeId"])


def attach(lab: Lab, volume_id: str, device: str) -> Path:
    lab.ec2.attach_volume(VolumeId=volume_id, InstanceId=lab.instance_id, Device=device)
    node = lab.device_for(volume_id)
    assert node is not None
    return node


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def volume(lab: Lab, volume_id: str) -> dict[str, Any]:
    return dict(lab.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0])


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


# IMDS


def test_imds_v2_token_flow(lab: Lab) -> None:
    assert http(lab, "GET", "/latest/meta-data/instance-id")[0] == 401
    for bad_ttl in ("0", "21601", "abc"):
        assert http(lab, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": bad_ttl})[0] == 400
    assert http(lab, "PUT", "/latest/api/token")[0] == 400
    assert http(lab, "GET", "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": "forged"})[0] == 401

    good = token(lab, "21600")

    def get(path: str) -> bytes:
        status, body = http(lab, "GET", path, {"X-aws-ec2-metadata-token": good})
        assert status == 200, path
        return body

    assert get("/latest/meta-data/instance-id").decode() == lab.instance_id
    assert get("/latest/meta-data/placement/availability-zone").decode() == "us-east-1a"
    assert get("/latest/meta-data/placement/region").decode() == "us-east-1"
    assert get("/latest/meta-data/instance-type").decode() == "t3.large"
    assert get("/latest/meta-data/ami-id").decode().startswith("ami-")
    assert get("/latest/meta-data/local-hostname").decode().endswith(".ec2.internal")
    assert json.loads(get("/latest/user-data")) == DEFAULT_USERDATA
    document = json.loads(get("/latest/dynamic/instance-identity/document"))
    assert document["instanceId"] == lab.instance_id
    assert document["region"] == "us-east-1"
    assert document["availabilityZone"] == "us-east-1a"
    assert document["accountId"] == "123456789012"
    assert {"instanceType", "imageId", "architecture", "privateIp", "pendingTime", "version"} <= set(document)


def test_imds_dated_versions_and_directories_as_cloud_init_reads_them(lab: Lab) -> None:
    """cloud-init's Ec2 datasource asks for a dated API version and lists directories without a slash."""
    assert b"2021-03-23" in imds_get(lab, "/")[1].split(b"\n")
    for version in ("latest", "2021-03-23", "2009-04-04"):
        assert imds_get(lab, f"/{version}/meta-data/instance-id") == (200, lab.instance_id.encode())
        assert imds_get(lab, f"/{version}/dynamic/instance-identity") == (200, b"document")
    assert imds_get(lab, "/latest/meta-data") == imds_get(lab, "/latest/meta-data/")
    assert b"placement/" in imds_get(lab, "/latest/meta-data")[1].split(b"\n")
    assert imds_get(lab, "/2099-01-01/meta-data/instance-id")[0] == 404
    assert imds_get(lab, "/latest/meta-data/instance-i")[0] == 404


def test_imds_token_expires(lab: Lab) -> None:
    short = token(lab, "1")
    time.sleep(1.1)
    assert http(lab, "GET", "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": short})[0] == 401


def test_imds_v1_only_and_v2_optional(lab: Lab) -> None:
    lab.faults.imds_mode = "v1-only"
    assert http(lab, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})[0] in (404, 405)
    assert http(lab, "GET", "/latest/meta-data/instance-id") == (200, lab.instance_id.encode())
    lab.faults.imds_mode = "v2-optional"
    assert http(lab, "GET", "/latest/meta-data/instance-id")[0] == 200
    assert imds_get(lab, "/latest/meta-data/instance-id")[0] == 200
    with pytest.raises(ValueError):
        lab.faults.imds_mode = "v3"


def test_imds_userdata_raw_absent_and_changed(lab_factory: LabFactory) -> None:
    lab = lab_factory(userdata=None)
    assert imds_get(lab, "/latest/user-data")[0] == 404
    raw = b"\x00\xffnot json"
    lab.set_userdata(raw)
    assert imds_get(lab, "/latest/user-data") == (200, raw)


def test_imds_outages_and_latency(lab: Lab) -> None:
    lab.faults.imds_fail_for = 0.4
    assert http(lab, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})[0] == 503
    time.sleep(0.45)
    assert imds_get(lab, "/latest/meta-data/instance-id")[0] == 200

    lab.faults.imds_down = True
    with pytest.raises(urllib.error.URLError):
        http(lab, "GET", "/latest/meta-data/instance-id")
    lab.faults.imds_down = False
    assert imds_get(lab, "/latest/meta-data/instance-id")[0] == 200

    lab.faults.imds_latency = 0.3
    started = time.monotonic()
    http(lab, "GET", "/latest/meta-data/instance-id")
    assert time.monotonic() - started >= 0.3


def test_credentials_come_from_imds(lab: Lab) -> None:
    assert "AWS_ACCESS_KEY_ID" not in lab.env and "AWS_SECRET_ACCESS_KEY" not in lab.env
    for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION"):
        assert name not in lab.env
    assert not Path(lab.env["AWS_SHARED_CREDENTIALS_FILE"]).exists()
    assert not Path(lab.env["AWS_CONFIG_FILE"]).exists()
    assert lab.env["AWS_EC2_METADATA_DISABLED"] == "false"
    assert lab.env["SNAPTASTIC_DEV_ROOT"] == str(lab.dev_root)
    # botocore's own chain, in a process that has nothing but the lab's environment.
    script = (
        "import boto3, json\n"
        "session = boto3.session.Session(region_name='us-east-1')\n"
        "creds = session.get_credentials()\n"
        "ec2 = session.client('ec2')\n"
        "ids = [i['InstanceId'] for r in ec2.describe_instances()['Reservations'] for i in r['Instances']]\n"
        "print(json.dumps({'method': creds.method, 'key': creds.access_key, 'ids': ids}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=lab.env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["method"] == "iam-role"
    assert result["key"] == lab.imds.access_key_id
    assert lab.instance_id in result["ids"]
    assert lab.call_counts()["DescribeInstances"] == 1


# Volumes, devices, snapshots


def test_volume_data_survives_snapshot_and_restore(lab_factory: LabFactory, device_style: str) -> None:
    lab = lab_factory(device_style=device_style)
    volume_id = new_volume(lab)
    assert lab.volume_file(volume_id).stat().st_size == 1024**3
    assert lab.volume_file(volume_id).stat().st_blocks == 0  # sparse
    node = attach(lab, volume_id, "/dev/sdf")
    assert node.is_block_device()
    if device_style == "xen":
        assert node == lab.dev_root / "xvdf"
        assert (lab.sys_root / "block" / "xvdf").is_dir()
    else:
        assert node == lab.dev_root / "nvme1n1"
        device = lab.sys_root / "block" / "nvme1n1" / "device"
        assert (device / "serial").read_text() == volume_id.replace("-", "").ljust(20) + "\n"
        assert (device / "model").read_text() == "Amazon Elastic Block Store".ljust(40) + "\n"
        assert (lab.sys_root / "block" / "nvme0n1" / "device" / "serial").exists()
    assert volume(lab, volume_id)["Attachments"][0]["State"] == "attached"

    sh("mkfs.ext4", "-q", str(node))
    mount_point = lab.mount_root / "data"
    mount_point.mkdir()
    sh("mount", str(node), str(mount_point))
    payload = os.urandom(300_000)
    (mount_point / "payload.bin").write_bytes(payload)
    sh("sync", "-f", str(mount_point / "payload.bin"))
    snapshot = lab.ec2.create_snapshot(VolumeId=volume_id, Description="lab")
    assert lab.snapshot_file(snapshot["SnapshotId"]).exists()
    # Writes after the call are not in the snapshot: the data was copied when EC2 answered.
    (mount_point / "later.txt").write_text("after the snapshot")

    # A mounted volume cannot leave: the detach stays busy and the device stays.
    answer = lab.ec2.detach_volume(VolumeId=volume_id)
    assert answer["State"] == "busy"
    assert volume(lab, volume_id)["Attachments"][0]["State"] == "busy"
    assert lab.device_for(volume_id) == node and node.is_block_device()
    sh("umount", str(mount_point))
    time.sleep(0.2)
    assert not node.exists()  # the busy detach finished on its own once the device was let go
    assert volume(lab, volume_id)["State"] == "available"
    assert lab.device_for(volume_id) is None

    restored = new_volume(lab, size=2, SnapshotId=snapshot["SnapshotId"])
    assert lab.volume_file(restored).stat().st_size == 2 * 1024**3
    restored_node = attach(lab, restored, "/dev/sdg")
    expected = "xvdg" if device_style == "xen" else "nvme1n1"
    assert restored_node == lab.dev_root / expected
    sh("mount", str(restored_node), str(mount_point))
    assert (mount_point / "payload.bin").read_bytes() == payload
    assert not (mount_point / "later.txt").exists()


def test_nvme_numbers_take_the_lowest_free(lab: Lab) -> None:
    first, second, third = new_volume(lab), new_volume(lab), new_volume(lab)
    assert attach(lab, first, "/dev/sdf").name == "nvme1n1"
    assert attach(lab, second, "/dev/sdg").name == "nvme2n1"
    lab.ec2.detach_volume(VolumeId=first)
    assert attach(lab, third, "/dev/sdh").name == "nvme1n1"


def test_create_snapshots_excludes_volumes_and_copies_tags(lab: Lab) -> None:
    def tagged(**tags: str) -> list[dict[str, Any]]:
        return [{"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]

    kept = new_volume(lab, TagSpecifications=tagged(mount="/data", role="solr", stage="old"))
    skipped = new_volume(lab, TagSpecifications=tagged(mount="/scratch"))
    attach(lab, kept, "/dev/sdf")
    attach(lab, skipped, "/dev/sdg")
    with open(lab.volume_file(kept), "r+b") as image:
        image.write(b"kept volume data")

    answer = lab.ec2.create_snapshots(
        InstanceSpecification={"InstanceId": lab.instance_id, "ExcludeBootVolume": True, "ExcludeDataVolumeIds": [skipped]},
        CopyTagsFromSource="volume",
        Description="nightly",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "stage", "Value": "new"}]}],
    )
    assert [s["VolumeId"] for s in answer["Snapshots"]] == [kept]
    snapshot = answer["Snapshots"][0]
    assert {t["Key"]: t["Value"] for t in snapshot["Tags"]} == {"mount": "/data", "role": "solr", "stage": "new"}
    described = lab.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert [s["SnapshotId"] for s in described] == [snapshot["SnapshotId"]]
    assert {t["Key"]: t["Value"] for t in described[0]["Tags"]}["stage"] == "new"
    assert described[0]["Description"] == "nightly"
    with open(lab.snapshot_file(snapshot["SnapshotId"]), "rb") as image:
        assert image.read(16) == b"kept volume data"

    with_boot = lab.ec2.create_snapshots(InstanceSpecification={"InstanceId": lab.instance_id})
    assert len(with_boot["Snapshots"]) == 3


def test_create_volume_client_token_is_idempotent(lab: Lab) -> None:
    first = new_volume(lab, ClientToken="restore-/data-1")
    again = new_volume(lab, ClientToken="restore-/data-1")
    assert first == again
    assert len(lab.ec2.describe_volumes()["Volumes"]) == 2  # the root volume and this one
    with pytest.raises(ClientError) as excinfo:
        new_volume(lab, size=5, ClientToken="restore-/data-1")
    assert error_code(excinfo) == "IdempotentParameterMismatch"
    lab.ec2.delete_volume(VolumeId=first)
    with pytest.raises(ClientError) as excinfo:
        new_volume(lab, ClientToken="restore-/data-1")
    assert error_code(excinfo) == "IdempotentParameterMismatch"


def test_detach_without_instance_id(lab: Lab) -> None:
    volume_id = new_volume(lab)
    node = attach(lab, volume_id, "/dev/sdf")
    loop = sh("losetup", "-j", str(lab.volume_file(volume_id))).split(":")[0]
    assert loop.startswith("/dev/loop")
    answer = lab.ec2.detach_volume(VolumeId=volume_id)
    assert answer["InstanceId"] == lab.instance_id
    assert volume(lab, volume_id)["State"] == "available"
    assert not node.exists()
    assert sh("losetup", "-j", str(lab.volume_file(volume_id))) == ""
    lab.ec2.delete_volume(VolumeId=volume_id)
    assert not lab.volume_file(volume_id).exists()


def test_attach_refusals_as_on_ec2(lab: Lab) -> None:
    volume_id, other = new_volume(lab), new_volume(lab)
    attach(lab, volume_id, "/dev/sdf")
    with pytest.raises(ClientError) as excinfo:
        lab.ec2.attach_volume(VolumeId=volume_id, InstanceId=lab.instance_id, Device="/dev/sdg")
    assert error_code(excinfo) == "VolumeInUse"
    with pytest.raises(ClientError) as excinfo:
        lab.ec2.attach_volume(VolumeId=other, InstanceId=lab.instance_id, Device="/dev/sdf")
    assert error_code(excinfo) == "InvalidParameterValue"


def test_volume_from_snapshot_refusals_as_on_ec2(lab: Lab) -> None:
    volume_id = new_volume(lab, size=3)
    snapshot_id = lab.ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    with pytest.raises(ClientError) as excinfo:
        new_volume(lab, size=2, SnapshotId=snapshot_id)
    assert error_code(excinfo) == "InvalidParameterValue"
    restored = lab.ec2.create_volume(SnapshotId=snapshot_id, AvailabilityZone=lab.availability_zone)
    assert restored["Size"] == 3 and lab.volume_file(restored["VolumeId"]).stat().st_size == 3 * 1024**3
    lab.faults.snapshot_pending_seconds = 30
    pending = lab.ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    with pytest.raises(ClientError) as excinfo:
        new_volume(lab, size=3, SnapshotId=pending)
    assert error_code(excinfo) == "IncorrectState"
    attach(lab, volume_id, "/dev/sdf")
    with pytest.raises(ClientError) as excinfo:
        lab.ec2.delete_volume(VolumeId=volume_id)
    assert error_code(excinfo) == "VolumeInUse"


def test_snapshot_start_times_are_distinct_and_increasing(lab: Lab) -> None:
    volume_id = new_volume(lab)
    ids = [lab.ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"] for _ in range(4)]
    described = {s["SnapshotId"]: s["StartTime"] for s in lab.ec2.describe_snapshots(SnapshotIds=ids)["Snapshots"]}
    times = [described[i] for i in ids]
    assert times == sorted(times) and len(set(times)) == 4
    assert times[-1] - times[0] < __import__("datetime").timedelta(seconds=1)


def test_delete_on_termination_and_replacement_instance(lab: Lab) -> None:
    doomed, kept = new_volume(lab), new_volume(lab)
    attach(lab, doomed, "/dev/sdf")
    attach(lab, kept, "/dev/sdg")
    lab.ec2.modify_instance_attribute(
        InstanceId=lab.instance_id,
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}},
            {"DeviceName": "/dev/sdg", "Ebs": {"DeleteOnTermination": False}},
        ],
    )
    instance = lab.ec2.describe_instances(InstanceIds=[lab.instance_id])["Reservations"][0]["Instances"][0]
    flags = {m["DeviceName"]: m["Ebs"]["DeleteOnTermination"] for m in instance["BlockDeviceMappings"]}
    assert flags["/dev/sdf"] is True and flags["/dev/sdg"] is False
    with pytest.raises(ClientError):
        lab.ec2.modify_instance_attribute(
            InstanceId=lab.instance_id,
            BlockDeviceMappings=[{"DeviceName": "/dev/sdz", "Ebs": {"DeleteOnTermination": True}}],
        )

    mount_point = lab.mount_root / "kept"
    mount_point.mkdir()
    node = lab.device_for(kept)
    assert node is not None
    sh("mkfs.ext4", "-q", str(node))
    sh("mount", str(node), str(mount_point))
    old = lab.instance_id
    lab.terminate_instance()  # a machine that dies loses its mounts
    assert not list(lab.dev_root.iterdir())
    assert str(mount_point) not in Path("/proc/self/mounts").read_text()
    assert not lab.volume_file(doomed).exists()
    assert volume(lab, kept)["State"] == "available"
    assert lab.ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [doomed]}])["Volumes"] == []

    new = lab.new_instance()
    assert new != old and lab.instance_id == new
    assert imds_get(lab, "/latest/meta-data/instance-id") == (200, new.encode())
    assert json.loads(imds_get(lab, "/latest/user-data")[1]) == DEFAULT_USERDATA
    node = attach(lab, kept, "/dev/sdf")
    sh("mount", str(node), str(mount_point))
    lab.new_instance(userdata=None)
    assert imds_get(lab, "/latest/user-data")[0] == 404
    assert lab.device_for(kept) is None  # still attached to the previous instance, which is elsewhere
    assert str(mount_point) not in Path("/proc/self/mounts").read_text()


# Knobs


def test_throttling_is_visible_without_retries(lab: Lab) -> None:
    client = lab.ec2_client(max_attempts=1)
    lab.faults.throttle_rate = 1.0
    with pytest.raises(ClientError) as excinfo:
        client.describe_volumes()
    assert error_code(excinfo) == "RequestLimitExceeded"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    lab.faults.throttle_rate = 0.0
    client.describe_volumes()
    assert lab.call_counts()["DescribeVolumes"] == 2
    lab.reset_calls()
    assert lab.calls == []


def test_random_faults_are_reproducible(lab_factory: LabFactory) -> None:
    def outcomes(lab: Lab) -> list[str]:
        client = lab.ec2_client(max_attempts=1)
        lab.faults.error_rate = 0.5
        seen = []
        for _ in range(12):
            try:
                client.describe_volumes()
                seen.append("ok")
            except ClientError as error:
                seen.append(error.response["Error"]["Code"])
        return seen

    first = outcomes(lab_factory(seed=7))
    assert set(first) - {"ok"} <= {"Unavailable", "InternalError"} and "ok" in first and len(set(first)) > 1
    assert outcomes(lab_factory(seed=7)) == first


def test_fail_and_hang_actions(lab: Lab) -> None:
    client = lab.ec2_client(max_attempts=1)
    lab.faults.fail_actions["CreateSnapshots"] = (403, "UnauthorizedOperation", "You are not authorized.")
    with pytest.raises(ClientError) as excinfo:
        client.create_snapshots(InstanceSpecification={"InstanceId": lab.instance_id})
    assert error_code(excinfo) == "UnauthorizedOperation"
    lab.faults.hang_actions["DescribeSnapshots"] = 0.3
    lab.faults.latency = 0.1
    started = time.monotonic()
    client.describe_snapshots(OwnerIds=["self"])
    assert time.monotonic() - started >= 0.4


def test_held_call_is_dropped_when_the_caller_gives_up(lab: Lab) -> None:
    volume_id = new_volume(lab)
    lab.faults.hang_actions = {"CreateSnapshot": 30.0}
    impatient = lab.ec2_client(max_attempts=1, read_timeout=0.3)
    with pytest.raises(ReadTimeoutError):
        impatient.create_snapshot(VolumeId=volume_id)
    time.sleep(0.3)
    lab.faults.hang_actions = {}
    assert lab.call_counts()["CreateSnapshot"] == 1
    assert lab.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []

    lab.faults.hang_actions = {"CreateSnapshot": 0.2}
    assert lab.ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"].startswith("snap-")


def test_stop_does_not_wait_for_held_calls(lab: Lab) -> None:
    lab.faults.hang_actions = {"DescribeVolumes": 30.0}
    client = lab.ec2_client(max_attempts=1)
    codes: list[str] = []

    def call() -> None:
        try:
            client.describe_volumes()
        except ClientError as error:
            codes.append(error.response["Error"]["Code"])

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    deadline = time.monotonic() + 30
    while "DescribeVolumes" not in lab.call_counts():
        assert time.monotonic() < deadline, "the call never reached the lab"
        time.sleep(0.02)
    started = time.monotonic()
    lab.stop()
    caller.join(5)
    assert not caller.is_alive() and codes == ["Unavailable"]
    assert time.monotonic() - started < 3


def test_volume_creating_then_available(lab: Lab) -> None:
    lab.faults.volume_creating_seconds = 0.4
    volume_id = new_volume(lab)
    assert volume(lab, volume_id)["State"] == "creating"
    with pytest.raises(ClientError) as excinfo:
        lab.ec2.attach_volume(VolumeId=volume_id, InstanceId=lab.instance_id, Device="/dev/sdf")
    assert error_code(excinfo) == "IncorrectState"
    time.sleep(0.45)
    assert volume(lab, volume_id)["State"] == "available"
    attach(lab, volume_id, "/dev/sdf")


def test_stuck_and_slow_attachments(lab: Lab) -> None:
    lab.faults.attach_stuck = math.inf
    stuck = new_volume(lab)
    lab.ec2.attach_volume(VolumeId=stuck, InstanceId=lab.instance_id, Device="/dev/sdf")
    time.sleep(0.2)
    assert volume(lab, stuck)["Attachments"][0]["State"] == "attaching"
    assert lab.device_for(stuck) is None

    lab.faults.attach_stuck = 0.3
    slow = new_volume(lab)
    lab.ec2.attach_volume(VolumeId=slow, InstanceId=lab.instance_id, Device="/dev/sdg")
    assert volume(lab, slow)["Attachments"][0]["State"] == "attaching"
    time.sleep(0.45)
    # The device appears on time without any call to EC2, as a kernel sees it on a real instance.
    assert (lab.dev_root / "nvme1n1").is_block_device()
    assert volume(lab, slow)["Attachments"][0]["State"] == "attached"
    assert lab.device_for(slow) == lab.dev_root / "nvme1n1"
    assert volume(lab, stuck)["Attachments"][0]["State"] == "attaching"

    lab.faults.attach_stuck = 0
    lab.faults.device_never_appears = True
    ghost = new_volume(lab)
    lab.ec2.attach_volume(VolumeId=ghost, InstanceId=lab.instance_id, Device="/dev/sdh")
    assert volume(lab, ghost)["Attachments"][0]["State"] == "attached"
    assert lab.device_for(ghost) is None


def test_slow_detach(lab: Lab) -> None:
    lab.faults.detach_seconds = 0.4
    volume_id = new_volume(lab)
    node = attach(lab, volume_id, "/dev/sdf")
    assert lab.ec2.detach_volume(VolumeId=volume_id)["State"] == "detaching"
    assert not node.exists()
    assert volume(lab, volume_id)["Attachments"][0]["State"] == "detaching"
    with pytest.raises(ClientError) as excinfo:
        lab.ec2.delete_volume(VolumeId=volume_id)
    assert error_code(excinfo) == "VolumeInUse"
    time.sleep(0.45)
    assert volume(lab, volume_id)["State"] == "available"
    lab.ec2.delete_volume(VolumeId=volume_id)


def test_pending_snapshot_becomes_completed(lab: Lab) -> None:
    lab.faults.snapshot_pending_seconds = 0.6
    volume_id = new_volume(lab)
    snapshot_id = lab.ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    first = lab.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert first["State"] == "pending" and first["Progress"] != "100%"
    time.sleep(0.65)
    done = lab.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert (done["State"], done["Progress"]) == ("completed", "100%")
    assert lab.ec2.describe_snapshots(Filters=[{"Name": "status", "Values": ["completed"]}])["Snapshots"]


# Clean-up


def lab_loops(workdir: Path) -> list[str]:
    """Loop devices of the lab's volume images (the image store's own loop is not one of them)."""
    return [line for line in sh("losetup", "-a").splitlines() if str(workdir) in line and "store.img" not in line]


def test_many_volumes_and_no_leaked_loop_devices(lab_factory: LabFactory, tmp_path: Path) -> None:
    lab = lab_factory(device_style="xen", workdir=tmp_path / "many")
    volume_ids = [new_volume(lab) for _ in range(18)]
    letters = "fghijklmnopqrstuvw"
    nodes = [attach(lab, v, f"/dev/sd{letter}") for v, letter in zip(volume_ids, letters)]
    assert len({os.stat(n).st_rdev for n in nodes}) == 18
    assert len(lab_loops(lab.workdir)) == 18
    sh("mkfs.ext4", "-q", str(nodes[0]))
    (lab.mount_root / "one").mkdir()
    sh("mount", str(nodes[0]), str(lab.mount_root / "one"))
    lab.stop()
    assert lab_loops(lab.workdir) == []
    assert str(lab.workdir) not in Path("/proc/self/mounts").read_text()
    assert not [line for line in sh("losetup", "-a").splitlines() if str(lab.workdir) in line]  # the store's too
    assert not any(lab.dev_root.iterdir())


def test_serve_gives_a_shell_in_a_private_namespace(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root: loop devices and mounts")
    script = 'mount -t tmpfs lab "$SNAPTASTIC_LAB/mnt" && findmnt -n -o FSTYPE "$SNAPTASTIC_LAB/mnt"; exit 0\n'
    env = {k: v for k, v in os.environ.items() if k != "SNAPTASTIC_LAB_PRIVATE_NS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-m", "snaptastic_lab", "serve", "--shell", "--workdir", str(tmp_path / "served")],
        input=script,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "export AWS_ENDPOINT_URL_EC2=http://127.0.0.1:" in done.stdout
    assert "export SNAPTASTIC_DEV_ROOT=" in done.stdout
    assert done.stdout.strip().endswith("tmpfs")
    assert str(tmp_path / "served") not in Path("/proc/self/mounts").read_text()


def test_lab_fixtures_skip_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from snaptastic_lab import pytest_plugin

    monkeypatch.setattr(pytest_plugin.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="lab tests need root: loop devices and mounts"):
        pytest_plugin._usable()
