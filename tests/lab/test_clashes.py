"""Clashes refused before anything changes: two snapshotters claiming one device or mount point, and a
device that another volume already holds on this instance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.lab.agent import configure, our_volumes, volumes


def two_snapshotters(lab: Any, first: dict[str, Any], second: dict[str, Any]) -> None:
    path = Path(lab.workdir) / "snaptastic.json"
    path.write_text(json.dumps({"snapshotters": {"a": {"volumes": [first]}, "b": {"volumes": [second]}}}))
    lab.env["SNAPTASTIC_CONFIG"] = str(path)


@pytest.mark.parametrize(("second", "field", "value"), [
    ({"device": "/dev/xvdf", "mount_point": "{root}/b"}, "device", "/dev/sdf"),
    ({"device": "/dev/sdg", "mount_point": "{root}/a"}, "mount_point", "{root}/a"),
], ids=["device", "mount-point"])
def test_two_snapshotters_claiming_one_thing_are_refused(lab: Any, second: dict[str, str], field: str, value: str) -> None:
    root = str(lab.mount_root)
    two_snapshotters(lab, {"device": "/dev/sdf", "mount_point": f"{root}/a", "size": 1},
                     {k: v.format(root=root) for k, v in second.items()} | {"size": 1})
    value = value.format(root=root)
    for command in (["mount-snapshots", "a"], ["mount-snapshots", "b"], ["make-snapshots", "b"], ["test"]):
        result = lab.run(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert f"{value} is also used by snapshotter 'a'" in result.stderr + result.stdout
    assert our_volumes(lab) == [] and lab.call_counts()["CreateVolume"] == 0


def test_a_device_another_volume_holds_is_refused_before_any_volume_is_made(lab: Any) -> None:
    configure(lab, volumes(lab, 2))
    foreign = lab.ec2.create_volume(AvailabilityZone=lab.availability_zone, Size=1)["VolumeId"]
    lab.ec2.attach_volume(VolumeId=foreign, InstanceId=lab.instance_id, Device="/dev/xvdg")
    lab.reset_calls()
    result = lab.run("mount-snapshots", "solr")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("snaptastic: error:")]
    assert len(errors) == 1 and "/dev/sdg is already in use on this instance by " + foreign in errors[0]
    assert lab.call_counts()["CreateVolume"] == 0 and our_volumes(lab) == []
