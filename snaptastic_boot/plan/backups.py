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

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> dt.timedelta:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise BadInput(messages.bad_age(text))
    return dt.timedelta(seconds=float(m.group(1)) * UNITS[m.group(2) or "s"])


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

    @property
    def ok(self) -> bool:
        return self.age_seconds is not None and self.age_seconds <= self.max_age_seconds

    def line(self) -> str:
        limit = human(dt.timedelta(seconds=self.max_age_seconds))
        if self.snapshot_id is None or self.age_seconds is None:
            return f"CRITICAL {self.mount_point}: no completed snapshot (limit {limit})"
        age = human(dt.timedelta(seconds=self.age_seconds))
        return f"{'OK' if self.ok else 'CRITICAL'} {self.mount_point}: newest snapshot {self.snapshot_id} is {age} old (limit {limit})"

    def as_dict(self) -> dict[str, Any]:
        return {"mount_point": self.mount_point, "snapshot_id": self.snapshot_id, "age_seconds": self.age_seconds,
                "max_age_seconds": self.max_age_seconds, "ok": self.ok}




def evaluate(volumes: Sequence[dict[str, Any]], snapshots: Sequence[dict[str, Any]], max_age: dt.timedelta,
             now: dt.datetime | None = None) -> list[Freshness]:
    now = now or times.now()
    mount_points = sorted({tags.tags_of(v)[tags.MOUNT_POINT] for v in volumes if tags.MOUNT_POINT in tags.tags_of(v)})
    newest: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        mp = tags.tags_of(snap).get(tags.MOUNT_POINT)
        if snap.get("State") != "completed" or mp not in mount_points:
            continue
        if mp not in newest or times.start_time(snap) > times.start_time(newest[mp]):
            newest[mp] = snap
    out = []
    for mp in mount_points:
        snap = newest.get(mp)
        age = (now - times.start_time(snap)).total_seconds() if snap else None
        out.append(Freshness(mp, snap["SnapshotId"] if snap else None, age, max_age.total_seconds()))
    return out
