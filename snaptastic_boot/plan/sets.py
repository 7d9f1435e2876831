"""Snapshot sets: the snapshots one make-snapshots run took together, in one crash-consistent call.

Every snapshot of a run carries the same `snapshot_set` tag. A snapshot without it (taken by the original
snaptastic, or before sets existed) is a set of its own. Restores and retention work on whole sets, so one
snapshotter's mount points are never restored from different points in time.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from snaptastic_boot import tags, times

COMPLETED = "completed"
PENDING = "pending"
ERROR = "error"


@dataclass(frozen=True)
class SnapshotSet:
    set_id: str  # the snapshot_set tag, or the snapshot id of an untagged snapshot
    tagged: bool
    members: dict[str, dict[str, Any]]  # mount point -> snapshot
    time: dt.datetime  # when the set was taken: its earliest member's start time

    @property
    def state(self) -> str:
        states = {s.get("State") for s in self.members.values()}
        if ERROR in states:
            return ERROR
        return PENDING if states - {COMPLETED} else COMPLETED

    def missing(self, mount_points: Iterable[str]) -> list[str]:
        return sorted(set(mount_points) - set(self.members))

    def failed_members(self) -> list[str]:
        return sorted(mp for mp, s in self.members.items() if s.get("State") == ERROR)

    def describe(self) -> str:
        return f"snapshot set {self.set_id} ({times.iso(self.time)})"


def new_set_id(now: dt.datetime) -> str:
    """A readable, unique id for the snapshots one run takes together."""
    return f"{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def group(snapshots: Sequence[dict[str, Any]], mount_points: Iterable[str]) -> list[SnapshotSet]:
    """The sets among these snapshots (of the given mount points only), newest first."""
    wanted = set(mount_points)
    by_set: dict[tuple[str, bool], dict[str, dict[str, Any]]] = {}
    for snap in sorted(snapshots, key=lambda s: (times.start_time(s), s["SnapshotId"])):
        have = tags.tags_of(snap)
        mp = have.get(tags.MOUNT_POINT)
        if mp not in wanted:
            continue
        set_id = have.get(tags.SNAPSHOT_SET)
        key = (set_id, True) if set_id else (snap["SnapshotId"], False)
        by_set.setdefault(key, {})[mp] = snap  # the newest of a mount point within one set
    out = [SnapshotSet(set_id, tagged, members, min(point_in_time(s) for s in members.values()))
           for (set_id, tagged), members in by_set.items()]
    return sorted(out, key=lambda s: (s.time, s.set_id), reverse=True)


def covered(sets: Sequence[SnapshotSet]) -> list[str]:
    """The mount points that tagged sets cover: a complete set must have a member for each."""
    return sorted({mp for s in sets if s.tagged for mp in s.members})


def is_complete(snapshot_set: SnapshotSet, must_cover: Iterable[str]) -> bool:
    return snapshot_set.state == COMPLETED and not snapshot_set.missing(must_cover)


@dataclass(frozen=True)
class SetChoice:
    """The newest complete set, a newer one still pending worth waiting for, and why newer sets were skipped."""

    chosen: SnapshotSet | None
    waiting_for: SnapshotSet | None
    skipped: tuple[tuple[SnapshotSet, str], ...]
    must_cover: tuple[str, ...]


def choose(snapshots: Sequence[dict[str, Any]], mount_points: Iterable[str], before: dt.datetime | None = None) -> SetChoice:
    """Among tagged sets taken before `before`: the newest complete one covering every mount point that any set
    covers. A newer set whose members are all completed or pending (none missing, none failed) is to be waited for."""
    tagged = [s for s in group(snapshots, mount_points) if s.tagged]
    must_cover = covered(tagged)
    chosen = waiting = None
    skipped: list[tuple[SnapshotSet, str]] = []
    for s in tagged:
        if before is not None and s.time >= before:
            continue
        missing = s.missing(must_cover)
        if s.state == ERROR:
            skipped.append((s, f"its snapshot of {', '.join(s.failed_members())} failed"))
        elif missing:
            skipped.append((s, f"it has no snapshot of {', '.join(missing)}"))
        elif s.state == PENDING:
            if waiting is None:
                waiting = s
            else:
                skipped.append((s, "a newer set is pending too"))
        else:
            chosen = s
            break
    return SetChoice(chosen, waiting, tuple(skipped), tuple(must_cover))


def point_in_time(snapshot: dict[str, Any]) -> dt.datetime:
    """When a snapshot's data was taken: its start time, or for a copy in another region (which starts when the
    copy does, in whatever order copies were made) the `created` time of the snapshot it copies."""
    have = tags.tags_of(snapshot)
    created = times.parse(have.get(tags.CREATED, "")) if tags.SOURCE_SNAPSHOT_ID in have else None
    return created or times.start_time(snapshot)


def expiry(snapshot: dict[str, Any]) -> tuple[str, dt.datetime | None]:
    """A snapshot's `expires` tag as written ("" when there is none) and the time it names (None when there is
    none or it is not understood: such a snapshot never expires)."""
    raw = tags.tags_of(snapshot).get(tags.EXPIRES, "")
    return raw, times.parse(raw) if raw else None


def is_expired(snapshot: dict[str, Any], now: dt.datetime) -> bool:
    expires = expiry(snapshot)[1]
    return expires is not None and expires < now
