from __future__ import annotations

import datetime as dt

import pytest

from snaptastic_boot.errors import BadInput, UnsafeOperation
from snaptastic_boot.model import Mount, SnapshotterSpec, VolumeSpec
from snaptastic_boot.plan import restore

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
TAGS = {"role": "solr", "cluster": "c", "environment": "e"}
SPEC = SnapshotterSpec("solr", (VolumeSpec("/dev/sdf", "/mnt/solr", 20), VolumeSpec("/dev/sdg", "/mnt/logs", 10)), TAGS)


def snap(sid: str, mp: str, minutes: int, state: str = "completed", size: int = 20, **tags: str) -> dict[str, object]:
    return {"SnapshotId": sid, "StartTime": T0 + dt.timedelta(minutes=minutes), "State": state, "VolumeSize": size,
            "Tags": [{"Key": k, "Value": v} for k, v in {**TAGS, "mount_point": mp, **tags}.items()]}


def vol(vid: str, mp: str, state: str = "in-use", attached_to: str | None = "i-1", snapshot: str = "") -> dict[str, object]:
    atts = [{"InstanceId": attached_to, "Device": "/dev/sdf", "State": "attached"}] if attached_to else []
    return {"VolumeId": vid, "State": state, "Size": 20, "SnapshotId": snapshot, "Attachments": atts,
            "Tags": [{"Key": k, "Value": v} for k, v in {**TAGS, "mount_point": mp, "instance_id": "i-1"}.items()]}


def plan(snapshots=(), volumes=(), mounts=(), **kw: object) -> restore.RestorePlan:
    return restore.plan_restore(SPEC, "i-1", "us-east-1a", list(snapshots), list(volumes), list(mounts), **kw)


def test_first_boot_creates_empty_and_formats() -> None:
    p = plan()
    assert [(s.action, s.snapshot, s.format_if_blank) for s in p.steps] == [("create", None, True), ("create", None, True)]


def test_newest_completed_snapshot_per_mount_point() -> None:
    p = plan([snap("snap-old", "/mnt/solr", 1), snap("snap-new", "/mnt/solr", 5), snap("snap-l", "/mnt/logs", 3),
              snap("snap-other", "/mnt/elsewhere", 9)])
    solr, logs = p.steps
    assert solr.snapshot and solr.snapshot.snapshot_id == "snap-new" and not solr.format_if_blank
    assert logs.snapshot and logs.snapshot.snapshot_id == "snap-l"


def test_pending_newest_is_waited_for_not_skipped() -> None:
    p = plan([snap("snap-done", "/mnt/solr", 1), snap("snap-pending", "/mnt/solr", 5, state="pending")])
    assert p.steps[0].snapshot and p.steps[0].snapshot.snapshot_id == "snap-pending"
    assert p.wait_pending == ("snap-pending",)


def test_error_snapshots_are_ignored() -> None:
    p = plan([snap("snap-ok", "/mnt/solr", 1), snap("snap-bad", "/mnt/solr", 5, state="error")])
    assert p.steps[0].snapshot and p.steps[0].snapshot.snapshot_id == "snap-ok"


def test_before_restores_point_in_time() -> None:
    p = plan([snap("snap-1", "/mnt/solr", 1), snap("snap-2", "/mnt/solr", 5)], before=T0 + dt.timedelta(minutes=3))
    assert p.steps[0].snapshot and p.steps[0].snapshot.snapshot_id == "snap-1"


def test_larger_config_than_snapshot_grows() -> None:
    p = plan([snap("snap-small", "/mnt/solr", 1, size=8)])
    assert (p.steps[0].size, p.steps[0].grow) == (20, True)
    p = plan([snap("snap-big", "/mnt/solr", 1, size=50)])
    assert (p.steps[0].size, p.steps[0].grow) == (50, False)


def test_reboot_reuses_attached_and_keeps_mounted() -> None:
    mounts = [Mount("/mnt/solr", "/dev/xvdf", "ext4", "202:80", "rw")]
    p = plan([snap("snap-new", "/mnt/solr", 5)], [vol("vol-a", "/mnt/solr", snapshot="snap-x"), vol("vol-b", "/mnt/logs")], mounts)
    assert [(s.action, s.volume_id) for s in p.steps] == [("mounted", "vol-a"), ("mount", "vol-b")]
    assert p.steps[1].format_if_blank  # created empty by us: may still need its filesystem after a crash


def test_interrupted_run_reuses_available_volume() -> None:
    p = plan([], [vol("vol-left", "/mnt/solr", state="available", attached_to=None)])
    assert (p.steps[0].action, p.steps[0].volume_id) == ("attach", "vol-left")
    assert p.steps[1].action == "create"


def test_volume_of_another_cluster_is_never_taken_as_ours() -> None:
    foreign = vol("vol-foreign", "/mnt/solr")
    foreign["Tags"] = [t if t["Key"] != "cluster" else {"Key": "cluster", "Value": "other"} for t in foreign["Tags"]]
    assert plan([], [foreign]).steps[0].action == "create"


def test_foreign_mount_refused() -> None:
    with pytest.raises(UnsafeOperation, match="not a volume this agent made"):
        plan(mounts=[Mount("/mnt/solr", "/dev/xvdz", "ext4", "202:1", "rw")])


def test_pins() -> None:
    found = [snap("snap-pin", "/mnt/solr", 1), snap("snap-foreign", "/mnt/solr", 1, cluster="other")]
    pinned = restore.check_pinned(SPEC, {"/mnt/solr": "snap-pin"}, found, force=False)
    p = plan([snap("snap-new", "/mnt/solr", 5)], pinned=pinned)
    assert p.steps[0].snapshot and p.steps[0].snapshot.snapshot_id == "snap-pin"
    with pytest.raises(BadInput, match="belongs elsewhere"):
        restore.check_pinned(SPEC, {"/mnt/solr": "snap-foreign"}, found, force=False)
    assert restore.check_pinned(SPEC, {"/mnt/solr": "snap-foreign"}, found, force=True)
    with pytest.raises(BadInput, match="not found"):
        restore.check_pinned(SPEC, {"/mnt/solr": "snap-nope"}, found, force=False)
    with pytest.raises(BadInput, match="must look like"):
        restore.parse_pins(["solr=snap-1"])


def test_bad_before() -> None:
    with pytest.raises(BadInput, match="--before: 'yesterday' is not a timestamp"):
        restore.parse_time("yesterday")
    assert restore.parse_time("2026-11-27T16:00:00Z") == dt.datetime(2026, 11, 27, 16, tzinfo=dt.timezone.utc)


def test_create_params_tags_and_token() -> None:
    p = plan([snap("snap-new", "/mnt/solr", 5)])
    params = restore.create_volume_params(p, p.steps[0], "2026-11-27T00:00:00Z", init_rate_ok=True)
    tags = {t["Key"]: t["Value"] for t in params["TagSpecifications"][0]["Tags"]}
    assert tags == {**TAGS, "mount_point": "/mnt/solr", "instance_id": "i-1", "created": "2026-11-27T00:00:00Z"}
    assert params["SnapshotId"] == "snap-new" and params["AvailabilityZone"] == "us-east-1a"
    again = restore.create_volume_params(p, p.steps[0], "x", True)
    assert params["ClientToken"] == again["ClientToken"]
    other = restore.create_volume_params(p, p.steps[1], "x", True)
    assert other["ClientToken"] != params["ClientToken"]


def test_plan_renders_and_serialises() -> None:
    p = plan([snap("snap-new", "/mnt/solr", 5)])
    from snaptastic_boot.commands.mount_snapshots import fstab_preview

    text = p.render(fstab_preview)
    assert "create 20 GiB gp3 from snap-new" in text and "UUID=<filesystem uuid> /mnt/solr ext4" in text
    assert p.as_dict(fstab_preview)["steps"][0]["fstab"].startswith("UUID=")
    assert p.as_dict()["steps"][0]["action"] == "create"


def test_initialization_rate_only_where_boto3_knows_it(caplog: pytest.LogCaptureFixture) -> None:
    spec = SnapshotterSpec("solr", (VolumeSpec("/dev/sdf", "/mnt/solr", 20, initialization_rate=200),), TAGS)
    p = restore.plan_restore(spec, "i-1", "us-east-1a", [snap("snap-new", "/mnt/solr", 5)], [], [])
    assert restore.create_volume_params(p, p.steps[0], "t", True)["VolumeInitializationRate"] == 200
    params = restore.create_volume_params(p, p.steps[0], "t", False)
    assert "VolumeInitializationRate" not in params
    assert "initialization_rate needs a newer boto3" in caplog.text
