"""Security rules that hold for the whole code base and for every command."""

from __future__ import annotations

import ast
import json
import stat
from pathlib import Path
from typing import Any

from tests.lab.agent import configure, ok, volumes

PACKAGE = Path(__file__).resolve().parent.parent / "snaptastic_boot"


def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE)): ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")}


def test_no_shell_anywhere() -> None:
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                raise AssertionError(f"{name}: shell= keyword")
            if isinstance(node, ast.Attribute) and node.attr in ("system", "popen") and getattr(node.value, "id", "") == "os":
                raise AssertionError(f"{name}: os.{node.attr}")


def test_only_the_adapters_import_subprocess_and_boto3() -> None:
    allowed = {"subprocess": {"system/runner.py"}, "boto3": {"system/ec2.py"},
               "botocore": {"system/ec2.py", "system/autoscaling.py"},
               "requests": set(), "http": {"system/http.py"}}
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for module in names:
                root = module.split(".")[0]
                if root in allowed:
                    assert name in allowed[root], f"{name} imports {module}"


def test_secrets_are_never_logged(lab: Any) -> None:
    lab.set_userdata(json.dumps({"role": "solr", "cluster": "solr-cluster", "environment": "test",
                                 "db_password": "hunter2-secret"}))
    configure(lab, volumes(lab, 1))
    outputs = []
    for args in (["test", "-v"], ["mount-snapshots", "solr", "-v"], ["make-snapshots", "solr", "-v"], ["list-volumes", "solr", "-v"]):
        result = ok(lab.run(*args))
        outputs.append(result.stdout + result.stderr)
    text = "\n".join(outputs)
    assert "hunter2-secret" not in text
    assert "db_password: <redacted>" in text
    creds = lab.imds.credentials()
    assert creds["SecretAccessKey"] and creds["Token"], creds.keys()
    for value in (creds["SecretAccessKey"], creds["Token"], "X-aws-ec2-metadata-token:"):
        assert value not in text


def test_lock_file_mode(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    lock = Path(lab.env["SNAPTASTIC_RUN_DIR"]) / "snaptastic.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def _snapshot_state(lab: Any, ids: list[str]) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    snaps = lab.ec2.describe_snapshots(SnapshotIds=ids)["Snapshots"]
    return sorted((s["SnapshotId"], s["State"], tuple(sorted((t["Key"], t["Value"]) for t in s.get("Tags", [])))) for s in snaps)


def _volume_state(lab: Any, ids: list[str]) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    vols = lab.ec2.describe_volumes(VolumeIds=ids)["Volumes"]
    return sorted((v["VolumeId"], v["State"], tuple(sorted((t["Key"], t["Value"]) for t in v.get("Tags", [])))) for v in vols)


def test_foreign_volumes_and_snapshots_are_untouched_by_every_command(lab: Any) -> None:
    configure(lab, volumes(lab, 1), retention={"days": 1, "keep": 1})
    mp = str(lab.mount_root / "data0")
    zone = lab.availability_zone
    old = [{"Key": "expires", "Value": "2020-01-01T00:00:00Z"}]

    def volume(tags: list[dict[str, str]]) -> str:
        spec = [{"ResourceType": "volume", "Tags": tags}] if tags else []
        return lab.ec2.create_volume(AvailabilityZone=zone, Size=1, TagSpecifications=spec)["VolumeId"]

    untagged = volume([])
    other_cluster = volume([{"Key": "role", "Value": "solr"}, {"Key": "cluster", "Value": "other"},
                            {"Key": "environment", "Value": "test"}, {"Key": "mount_point", "Value": mp},
                            {"Key": "instance_id", "Value": lab.instance_id}])
    other_instance = volume([{"Key": "role", "Value": "solr"}, {"Key": "cluster", "Value": "solr-cluster"},
                             {"Key": "environment", "Value": "test"}, {"Key": "mount_point", "Value": mp},
                             {"Key": "instance_id", "Value": "i-0someoneelse"}])
    attached_foreign = volume([])
    lab.ec2.attach_volume(VolumeId=attached_foreign, InstanceId=lab.instance_id, Device="/dev/sdp")
    foreign_vols = [untagged, other_cluster, other_instance, attached_foreign]
    snaps = [
        lab.ec2.create_snapshot(VolumeId=untagged, TagSpecifications=[{"ResourceType": "snapshot", "Tags": old}])["SnapshotId"],
        lab.ec2.create_snapshot(VolumeId=untagged, TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
            *old, {"Key": "role", "Value": "solr"}, {"Key": "cluster", "Value": "other"}, {"Key": "environment", "Value": "test"},
            {"Key": "mount_point", "Value": mp}]}])["SnapshotId"],
    ]
    vols_before, snaps_before = _volume_state(lab, foreign_vols), _snapshot_state(lab, snaps)
    for args in (["mount-snapshots", "solr"], ["make-snapshots", "solr"], ["make-snapshots", "solr"],
                 ["clean", "snapshots", "solr", "--force"], ["clean", "volumes", "solr", "--force"],
                 ["unmount-snapshots", "solr", "--yes", "--delete"], ["clean", "volumes", "solr", "--force"]):
        ok(lab.run(*args))
        assert _volume_state(lab, foreign_vols) == vols_before, args
    assert _volume_state(lab, foreign_vols) == vols_before
    assert _snapshot_state(lab, snaps) == snaps_before
    described = lab.ec2.describe_volumes(VolumeIds=[attached_foreign])["Volumes"][0]
    assert described["Attachments"][0]["InstanceId"] == lab.instance_id
