"""Times as EC2 and our tags carry them: ISO 8601 in UTC."""

from __future__ import annotations

import datetime as dt
from typing import Any


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str) -> dt.datetime | None:
    """ISO 8601 (trailing Z allowed), or the original snaptastic's `str(datetime)` form; naive means UTC."""
    value = text.strip().replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def start_time(resource: dict[str, Any]) -> dt.datetime:
    """A snapshot's StartTime, whether boto3 parsed it or not."""
    value = resource["StartTime"]
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return parse(str(value)) or dt.datetime.min.replace(tzinfo=dt.timezone.utc)
