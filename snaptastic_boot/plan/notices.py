"""watch, deciding: which interruption notices the metadata service shows, which are new, and what to do.

EC2 shows a notice at a metadata path for as long as it stands: a Spot interruption at
`meta-data/spot/instance-action` (`{"action": "terminate|stop|hibernate", "time": ...}`), a rebalance
recommendation at `meta-data/events/recommendations/rebalance` (`{"noticeTime": ...}`), and the Auto Scaling
target lifecycle state at `meta-data/autoscaling/target-lifecycle-state` (`Terminated` when the group
terminates the instance). Each path answers 404 while there is nothing. A notice is identified by its content,
so the same notice seen on every poll (and by a restarted watch, through the history kept in the run
directory) is acted on once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

SPOT_PATH = "latest/meta-data/spot/instance-action"
REBALANCE_PATH = "latest/meta-data/events/recommendations/rebalance"
LIFECYCLE_PATH = "latest/meta-data/autoscaling/target-lifecycle-state"
PATHS = (SPOT_PATH, REBALANCE_PATH, LIFECYCLE_PATH)

SPOT = "spot"
REBALANCE = "rebalance"
LIFECYCLE = "lifecycle"

SPOT_ACTIONS = ("terminate", "stop", "hibernate")
TERMINATED = "Terminated"


@dataclass(frozen=True)
class Notice:
    kind: str  # SPOT, REBALANCE or LIFECYCLE
    key: str  # the same for the same notice on every poll
    action: str  # terminate|stop|hibernate (Spot), "recommendation" (rebalance), the lifecycle state
    time: str = ""  # when EC2 says it happens, or when it gave the notice; "" when it did not say

    @property
    def terminates(self) -> bool:
        """The instance goes away for good: its volumes can be handed to the replacement. A Spot `stop` or
        `hibernate` instance comes back with its volumes; so does one whose notice could not be read."""
        return (self.kind == SPOT and self.action == "terminate") or (self.kind == LIFECYCLE and self.action == TERMINATED)

    def describe(self) -> str:
        what = {SPOT: f"Spot interruption notice ({self.action})", REBALANCE: "rebalance recommendation",
                LIFECYCLE: f"Auto Scaling lifecycle state {self.action}"}[self.kind]
        return f"{what}{f' at {self.time}' if self.time else ''}"


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def _json(body: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def spot_notice(instance_id: str, body: bytes | None) -> Notice | None:
    """The Spot interruption notice, if there is one. A body that is not the documented JSON is still a
    notice (the path exists only when there is one): it is snapshotted for, and the volumes stay attached."""
    if body is None:
        return None
    doc = _json(body)
    action = str(doc.get("action", "")) if doc else ""
    when = str(doc.get("time", "")) if doc else ""
    if action not in SPOT_ACTIONS:
        return Notice(SPOT, f"{instance_id}:spot:unreadable:{_digest(body)}", "unknown", when)
    return Notice(SPOT, f"{instance_id}:spot:{action}:{when}", action, when)


def rebalance_notice(instance_id: str, body: bytes | None) -> Notice | None:
    if body is None:
        return None
    doc = _json(body)
    when = str(doc.get("noticeTime", "")) if doc else ""
    return Notice(REBALANCE, f"{instance_id}:rebalance:{when or _digest(body)}", "recommendation", when)


def lifecycle_notice(instance_id: str, body: bytes | None) -> Notice | None:
    """Only `Terminated` is a notice; `InService` and the warm pool states are not."""
    if body is None:
        return None
    state = body.decode("utf-8", errors="replace").strip()
    if state != TERMINATED:
        return None
    # An instance is terminated once: its id is the notice's identity.
    return Notice(LIFECYCLE, f"{instance_id}:lifecycle:{TERMINATED}", TERMINATED)


def read_notices(instance_id: str, bodies: dict[str, bytes | None]) -> tuple[Notice, ...]:
    """The notices in what one poll read (path -> body, None for 404); paths it did not read are skipped."""
    found = (spot_notice(instance_id, bodies.get(SPOT_PATH)), rebalance_notice(instance_id, bodies.get(REBALANCE_PATH)),
             lifecycle_notice(instance_id, bodies.get(LIFECYCLE_PATH)))
    return tuple(n for n in found if n is not None)


@dataclass(frozen=True)
class History:
    """What this instance's watch did already: the notices it handled, and whether it released the volumes."""

    handled: frozenset[str] = field(default_factory=frozenset)
    released: bool = False

    def after(self, response: Response) -> History:
        return History(self.handled | {n.key for n in response.notices}, self.released or response.release)


@dataclass(frozen=True)
class Response:
    notices: tuple[Notice, ...]  # the new notices this answers (all recorded as handled afterwards)
    snapshot: bool  # make-snapshots for every watched snapshotter, at once
    release: bool  # then unmount and detach the volumes of those that reuse volumes
    complete_lifecycle: bool  # CompleteLifecycleAction (CONTINUE) once the snapshots returned
    reason: str = ""  # why something is not done

    def describe(self) -> str:
        acts = (["snapshot"] if self.snapshot else []) + (["complete the lifecycle action"] if self.complete_lifecycle else []) \
            + (["release the volumes for a replacement"] if self.release else [])
        what = ", then ".join(acts) if acts else "nothing to do"
        return f"{'; '.join(n.describe() for n in self.notices)}: {what}{f' ({self.reason})' if self.reason else ''}"


def respond(seen: Sequence[Notice], history: History, *, rebalance: bool, lifecycle_hook: bool) -> Response | None:
    """What to do about the notices of one poll; None when none of them is new.

    Several new notices at once get one snapshot. Once the volumes were released after a terminate notice,
    nothing is snapshotted any more (nothing is mounted), but a lifecycle action is still completed.
    """
    new = tuple(n for n in seen if n.key not in history.handled)
    if not new:
        return None
    acting = [n for n in new if n.kind != REBALANCE or rebalance]
    reasons = []
    if len(acting) < len(new):
        reasons.append("snapshots on rebalance recommendations are off")
    if acting and history.released:
        reasons.append("the volumes were already snapshotted and released after an earlier notice")
    snapshot = bool(acting) and not history.released
    release = any(n.terminates for n in acting) and not history.released
    complete = lifecycle_hook and any(n.kind == LIFECYCLE and n.action == TERMINATED for n in new)
    return Response(new, snapshot, release, complete, "; ".join(reasons))
