"""EC2's API throttling: a token bucket per category of action, per account and region, as AWS documents it.

Bucket size / refill per second: CreateVolume, CreateSnapshot(s), DeleteSnapshot, DeleteVolume 100/5;
CreateTags 100/10; other mutating actions (AttachVolume, DetachVolume, ...) 50/5; Describe* with filters or
pagination 100/20, without 50/10. One `scale` shrinks them all so that a boot storm fits a test (0.1: buckets
of 10 refilling at 0.5/s for CreateVolume). An empty bucket answers RequestLimitExceeded, HTTP 503, as EC2 does.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

CREATES = ("CreateVolume", "CreateSnapshot", "CreateSnapshots", "DeleteSnapshot", "DeleteVolume")
# category -> (bucket size, refill per second), unscaled
RATES = {
    "create": (100.0, 5.0),
    "tags": (100.0, 10.0),
    "mutating": (50.0, 5.0),
    "describe-filtered": (100.0, 20.0),
    "describe": (50.0, 10.0),
}


def category(action: str, params: Mapping[str, str]) -> str:
    if action in CREATES:
        return "create"
    if action == "CreateTags":
        return "tags"
    if action.startswith("Describe"):
        # Filtered or paginated requests come from the larger bucket; EC2 counts them only when they are.
        filtered = any(k.startswith("Filter.") or k in ("MaxResults", "NextToken") for k in params)
        return "describe-filtered" if filtered else "describe"
    return "mutating"


@dataclass
class _Bucket:
    size: float
    rate: float
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.size, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class TokenBuckets:
    def __init__(self, scale: float) -> None:
        now = time.monotonic()
        self.scale = scale
        self._buckets = {name: _Bucket(size * scale, rate * scale, size * scale, now) for name, (size, rate) in RATES.items()}
        self._lock = threading.Lock()
        self.accepted: Counter[str] = Counter()  # per category
        self.refused: Counter[str] = Counter()

    def take(self, action: str, params: Mapping[str, str]) -> bool:
        """Whether this request gets a token (False: EC2 would answer RequestLimitExceeded)."""
        name = category(action, params)
        with self._lock:
            ok = self._buckets[name].take(time.monotonic())
            (self.accepted if ok else self.refused)[name] += 1
            return ok

    def lower_bound(self) -> float:
        """Seconds the accepted calls needed at the least: past each full bucket, its refill rate."""
        return max((max(0.0, n - self._buckets[c].size) / self._buckets[c].rate for c, n in self.accepted.items()),
                   default=0.0)
