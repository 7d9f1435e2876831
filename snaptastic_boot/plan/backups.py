"""check-backups: is the newest completed snapshot of every in-use mount point young enough?

Start times are compared in code; the original filtered on a single date and missed most snapshots.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from snaptastic_boot import messages, tags, times
from snaptastic_boot.errors import BadInput
from snaptastic_boot.plan import sets

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> dt.timedelta:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise BadInput(messages.bad_age(text))
    return dt.timedelta(seconds=float(m.group(1)) * UNITS[m.group(2) or "s"])


def parse_tags(values: Sequence[str]) -> dict[str, str]:
    """`--tag KEY=VALUE` options as a dict."""
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key or not val:
            raise BadInput(messages.bad_tag(value))
        out[key] = val
    return out


def human(delta: dt.timedelta) -> str:
    secs = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs / size:.1f}{unit}"
    return f"{secs}s"


@dataclass(frozen=True)
class Freshness:
    mount_point: str
    snapshot_id: str | None
    age_seconds: float | None
    max_age_seconds: float
    snapshotter: str = ""
    snapshot_set: str | None = None
    problem: str | None = None  # e.g. the newest set is incomplete

    @property
    def ok(self) -> bool:
        return self.problem is None and self.age_seconds is not None and self.age_seconds <= self.max_age_seconds

    def line(self) -> str:
        limit = human(dt.timedelta(seconds=self.max_age_seconds))
        where = f"{self.mount_point} ({self.snapshotter})" if self.snapshotter else self.mount_point
        problem = f"; {self.problem}" if self.problem else ""
        if self.snapshot_id is None or self.age_seconds is None:
            return f"CRITICAL {where}: no completed snapshot (limit {limit}){problem}"
        age = human(dt.timedelta(seconds=self.age_seconds))
        return f"{'OK' if self.ok else 'CRITICAL'} {where}: newest snapshot {self.snapshot_id} is {age} old (limit {limit}){problem}"

    def as_dict(self) -> dict[str, Any]:
        return {"mount_point": self.mount_point, "snapshot_id": self.snapshot_id, "age_seconds": self.age_seconds,
                "max_age_seconds": self.max_age_seconds, "ok": self.ok, "snapshotter": self.snapshotter,
                "snapshot_set": self.snapshot_set, "problem": self.problem}


def evaluate(volumes: Sequence[dict[str, Any]], snapshots: Sequence[dict[str, Any]], max_age: dt.timedelta,
             now: dt.datetime | None = None, snapshotter: str = "") -> list[Freshness]:
    """Per in-use mount point: the age of its newest restorable backup. Where snapshot sets cover it, that is
    the newest complete set, and a newest set that failed or lost a member is reported as incomplete."""
    now = now or times.now()
    mount_points = sorted({tags.tags_of(v)[tags.MOUNT_POINT] for v in volumes if tags.MOUNT_POINT in tags.tags_of(v)})
    all_sets = sets.group(snapshots, mount_points)
    must_cover = sets.covered(all_sets)
    tagged = [s for s in all_sets if s.tagged]
    complete = next((s for s in tagged if sets.is_complete(s, must_cover)), None)
    newest = tagged[0] if tagged else None
    broken = None
    if newest is not None and newest is not complete and (newest.state == sets.ERROR or newest.missing(must_cover)):
        why = newest.failed_members() or newest.missing(must_cover)
        verb = "failed" if newest.state == sets.ERROR else "is missing"
        broken = f"newest snapshot set {newest.set_id} is incomplete: its snapshot of {', '.join(why)} {verb}"
    out = []
    for mp in mount_points:
        if mp in must_cover:
            snap = complete.members[mp] if complete else None
            set_id = complete.set_id if complete else None
            problem = broken
        else:
            own = [s for s in all_sets if mp in s.members and s.members[mp].get("State") == sets.COMPLETED]
            snap, set_id, problem = (own[0].members[mp] if own else None), None, None
        age = (now - sets.point_in_time(snap)).total_seconds() if snap else None
        out.append(Freshness(mp, snap["SnapshotId"] if snap else None, age, max_age.total_seconds(), snapshotter,
                             set_id, problem))
    return out

