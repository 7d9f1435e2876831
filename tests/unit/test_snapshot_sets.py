"""Choosing one point in time for a whole snapshotter: snapshot sets in the restore plan."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from snaptastic_boot.errors import OperationFailed
from snaptastic_boot.model import SnapshotterSpec, VolumeSpec
from snaptastic_boot.plan import restore

TAGS = {"role": "db", "cluster": "c", "environment": "e"}
MOUNTS = ("/mnt/a", "/mnt/b", "/mnt/c")
SPEC = SnapshotterSpec("db", tuple(VolumeSpec(f"/dev/sd{d}", mp, 10) for d, mp in zip("fgh", MOUNTS)), TAGS)
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


def snap(snap_id: str, mp: str, minute: int, set_id: str | None = None, state: str = "completed") -> dict[str, Any]:
    tags = {**TAGS, "mount_point": mp, **({"snapshot_set": set_id} if set_id else {})}
    return {"SnapshotId": snap_id, "State": state, "VolumeSize": 10, "StartTime": T0 + dt.timedelta(minutes=minute),
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


def snapset(set_id: str, minute: int, **states: str) -> list[dict[str, Any]]:
    """One run's snapshots of every mount point; states by mount point letter, e.g. b="error"."""
    return [snap(f"snap-{set_id}-{mp[-1]}", mp, minute, set_id, states.get(mp[-1], "completed")) for mp in MOUNTS]


def sources_of(plan: restore.RestorePlan) -> dict[str, str | None]:
    return {s.mount_point: s.snapshot.snapshot_id if s.snapshot else None for s in plan.steps}


def plan(snapshots: list[dict[str, Any]], spec: SnapshotterSpec = SPEC, **kw: Any) -> restore.RestorePlan:
    return restore.plan_restore(spec, "i-1", "us-east-1a", snapshots, [], [], **kw)


def test_the_newest_complete_set_is_restored_whole() -> None:
    p = plan(snapset("one", 0) + snapset("two", 60))
    assert set(sources_of(p).values()) == {"snap-two-a", "snap-two-b", "snap-two-c"}
    assert p.snapshot_set == "two" and not p.notes and not p.wait_pending


@pytest.mark.parametrize("broken", [{"b": "error"}, "deleted"])
def test_a_set_with_a_failed_or_missing_member_is_skipped_with_a_note(broken: Any) -> None:
    newest = snapset("two", 60, **broken) if isinstance(broken, dict) else [s for s in snapset("two", 60) if "-b" not in s["SnapshotId"]]
    p = plan(snapset("one", 0) + newest)
    assert sources_of(p) == {"/mnt/a": "snap-one-a", "/mnt/b": "snap-one-b", "/mnt/c": "snap-one-c"}
    assert p.snapshot_set == "one"
    assert len(p.notes) == 1 and "skipping snapshot set two" in p.notes[0] and "using snapshot set one" in p.notes[0]
    assert "/mnt/b" in p.notes[0]


def test_a_pending_newer_set_is_waited_for_with_the_previous_set_as_fallback() -> None:
    p = plan(snapset("one", 0) + snapset("two", 60, a="pending", c="pending"))
    assert set(sources_of(p).values()) == {"snap-two-a", "snap-two-b", "snap-two-c"}
    assert p.wait_pending == ("snap-two-a", "snap-two-c")
    assert {s.mount_point: s.snapshot.snapshot_id for s in p.fallback if s.snapshot} == {
        "/mnt/a": "snap-one-a", "/mnt/b": "snap-one-b", "/mnt/c": "snap-one-c"}


def test_before_chooses_among_sets_by_their_time() -> None:
    p = plan(snapset("one", 0) + snapset("two", 60), before=T0 + dt.timedelta(minutes=30))
    assert p.snapshot_set == "one" and set(sources_of(p).values()) == {"snap-one-a", "snap-one-b", "snap-one-c"}


def test_a_mount_point_no_set_covers_gets_its_own_newest_and_a_note() -> None:
    spec = SnapshotterSpec("db", (*SPEC.volumes, VolumeSpec("/dev/sdi", "/mnt/new", 5)), TAGS)
    p = plan(snapset("one", 0), spec=spec)
    assert sources_of(p)["/mnt/new"] is None and sources_of(p)["/mnt/a"] == "snap-one-a"
    assert any("/mnt/new: no snapshot set covers it" in n for n in p.notes)


def test_old_snaptastic_snapshots_restore_per_mount_point_as_before() -> None:
    old = [snap("snap-a1", "/mnt/a", 0), snap("snap-a2", "/mnt/a", 10), snap("snap-b1", "/mnt/b", 5)]
    p = plan(old)
    assert sources_of(p) == {"/mnt/a": "snap-a2", "/mnt/b": "snap-b1", "/mnt/c": None}
    assert p.snapshot_set is None and not p.notes


def test_a_pin_overrides_and_says_it_breaks_the_set() -> None:
    pinned = snap("snap-pin", "/mnt/b", 5)
    p = plan(snapset("one", 0) + snapset("two", 60), pinned={"/mnt/b": pinned})
    assert sources_of(p) == {"/mnt/a": "snap-two-a", "/mnt/b": "snap-pin", "/mnt/c": "snap-two-c"}
    assert any("breaks snapshot set two" in n for n in p.notes)


def test_no_complete_set_at_all_is_an_error_not_a_mix() -> None:
    with pytest.raises(OperationFailed, match="no complete snapshot set"):
        plan(snapset("one", 0, b="error"))


def test_consistent_restore_off_restores_each_mount_point_independently() -> None:
    spec = SnapshotterSpec("db", SPEC.volumes, TAGS, consistent_restore=False)
    p = plan(snapset("one", 0) + snapset("two", 60, b="error"), spec=spec)
    assert sources_of(p) == {"/mnt/a": "snap-two-a", "/mnt/b": "snap-one-b", "/mnt/c": "snap-two-c"}
    assert p.snapshot_set is None


def test_sets_of_different_cluster_members_are_never_mixed() -> None:
    # Two members of one cluster snapshot at about the same time; member two's newest set lacks /mnt/c.
    member_one = snapset("m1", 0)
    member_two = [s for s in snapset("m2", 1) if "-c" not in s["SnapshotId"]]
    p = plan(member_one + member_two)
    assert set(sources_of(p).values()) == {"snap-m1-a", "snap-m1-b", "snap-m1-c"}
