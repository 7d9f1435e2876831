from __future__ import annotations

import datetime as dt

import pytest

from snaptastic_boot import times
from snaptastic_boot.errors import BadInput
from snaptastic_boot.model import SnapshotterSpec, VolumeSpec
from snaptastic_boot.plan import backups
from snaptastic_boot.plan import clean as retention

NOW = dt.datetime(2026, 11, 27, 12, tzinfo=dt.timezone.utc)
TAGS = {"role": "solr", "cluster": "c", "environment": "e"}
SPEC = SnapshotterSpec("solr", (VolumeSpec("/dev/sdf", "/mnt/solr", 20),), TAGS)


def snap(sid: str, days_ago: float, expires: str | None, state: str = "completed", **tags: str) -> dict[str, object]:
    t = {**TAGS, "mount_point": "/mnt/solr", **tags}
    if expires is not None:
        t["expires"] = expires
    return {"SnapshotId": sid, "StartTime": NOW - dt.timedelta(days=days_ago), "State": state,
            "Tags": [{"Key": k, "Value": v} for k, v in t.items()]}


PAST = "2026-11-01T00:00:00Z"
FUTURE = "2026-12-30T00:00:00Z"


def test_keeps_newest_k_and_deletes_only_expired_matching() -> None:
    snaps = [snap(f"snap-{i}", i, PAST) for i in range(1, 7)] + [
        snap("snap-future", 10, FUTURE),
        snap("snap-foreign", 20, PAST, cluster="other"),
        snap("snap-pending", 0.1, PAST, state="pending"),
        snap("snap-noexpiry", 30, None),
        snap("snap-garbled", 30, "someday"),
    ]
    plan = retention.plan_snapshot_cleanup(SPEC, snaps, keep=3, now=NOW)
    assert sorted(d.resource_id for d in plan) == ["snap-4", "snap-5", "snap-6"]


def test_old_snaptastic_expires_format() -> None:
    assert times.parse("2013-05-01 12:34:56.123456") == dt.datetime(2013, 5, 1, 12, 34, 56, 123456, tzinfo=dt.timezone.utc)
    plan = retention.plan_snapshot_cleanup(SPEC, [snap("snap-a", 1, FUTURE), snap("snap-old", 400, "2025-01-01 00:00:00.000001")],
                                           keep=1, now=NOW)
    assert [d.resource_id for d in plan] == ["snap-old"]


def test_leaked_volumes_only_ours_and_old_enough() -> None:
    def vol(vid: str, hours: float, state: str = "available", **tags: str) -> dict[str, object]:
        t = {**TAGS, "mount_point": "/mnt/solr", "instance_id": "i-1", **tags}
        return {"VolumeId": vid, "State": state, "CreateTime": NOW - dt.timedelta(hours=hours),
                "Tags": [{"Key": k, "Value": v} for k, v in t.items()]}

    unmounted = (NOW - dt.timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    vols = [vol("vol-copied", 5, detached=unmounted), vol("vol-uncopied", 5, detached=unmounted), vol("vol-crashed", 5),
            vol("vol-young", 0.1), vol("vol-used", 5, state="in-use"), vol("vol-foreign", 5, role="db")]
    snaps = [{"SnapshotId": "snap-after", "VolumeId": "vol-copied", "State": "completed", "StartTime": NOW - dt.timedelta(hours=2)},
             {"SnapshotId": "snap-before", "VolumeId": "vol-uncopied", "State": "completed", "StartTime": NOW - dt.timedelta(hours=4)},
             {"SnapshotId": "snap-pending", "VolumeId": "vol-uncopied", "State": "pending", "StartTime": NOW - dt.timedelta(hours=2)}]
    plan = retention.plan_volume_cleanup(SPEC, vols, snaps, now=NOW)
    assert [d.resource_id for d in plan if not d.keep] == ["vol-copied"]
    kept = {d.resource_id: d.reason for d in plan if d.keep}
    assert set(kept) == {"vol-uncopied", "vol-crashed"}
    assert "no completed snapshot of it since it was unmounted" in kept["vol-uncopied"]
    assert "may hold writes no snapshot has" in kept["vol-crashed"]


@pytest.mark.parametrize(("text", "seconds"), [("1d", 86400), ("12h", 43200), ("90m", 5400), ("30", 30), ("2w", 1209600)])
def test_parse_age(text: str, seconds: int) -> None:
    assert backups.parse_age(text).total_seconds() == seconds


def test_parse_age_bad() -> None:
    with pytest.raises(BadInput, match="--age"):
        backups.parse_age("soon")


def test_check_backups_fresh_stale_missing() -> None:
    def vol(mp: str) -> dict[str, object]:
        return {"VolumeId": "v", "Tags": [{"Key": "mount_point", "Value": mp}]}

    def s(sid: str, mp: str, hours: float, state: str = "completed") -> dict[str, object]:
        return {"SnapshotId": sid, "State": state, "StartTime": NOW - dt.timedelta(hours=hours),
                "Tags": [{"Key": "mount_point", "Value": mp}]}

    result = backups.evaluate([vol("/a"), vol("/b"), vol("/c")],
                              [s("s1", "/a", 2), s("s0", "/a", 50), s("s2", "/b", 30), s("s3", "/c", 1, state="pending")],
                              dt.timedelta(days=1), now=NOW)
    assert [(r.mount_point, r.snapshot_id, r.ok) for r in result] == [("/a", "s1", True), ("/b", "s2", False), ("/c", None, False)]
    assert result[0].line().startswith("OK /a: newest snapshot s1 is 2.0h old")
    assert result[2].line() == "CRITICAL /c: no completed snapshot (limit 1.0d)"
