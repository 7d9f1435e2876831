"""copy-snapshots, applying: start each planned copy in its destination region."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from snaptastic_boot.apply.parallel import run_all
from snaptastic_boot.errors import AwsError
from snaptastic_boot.plan.copy import CopyPlan, CopyStep
from snaptastic_boot.system.interfaces import Ec2Api

log = logging.getLogger("snaptastic.copy")

LIMIT_EXCEEDED = "ResourceLimitExceeded"  # CopySnapshot beyond the region's concurrent copies


def apply_copies(plan: CopyPlan, ec2_in: Callable[[str], Ec2Api]) -> dict[str, Any]:
    """Start every copy (CopySnapshot is called in the destination); the copies' ids by region."""

    def start(step: CopyStep) -> str | None:
        description = f"{step.mount_point}: copy of {step.source_snapshot_id} from {plan.source_region}"[:255]
        try:
            copy_id = ec2_in(step.region).copy_snapshot(plan.source_region, step.source_snapshot_id, description,
                                                        step.tags)
        except AwsError as exc:
            if exc.code != LIMIT_EXCEEDED:
                raise
            # Copies started elsewhere (another instance, another tool) filled the region: the next run copies it.
            log.warning("%s: %s waits for a later run: %s", step.region, step.source_snapshot_id, exc)
            return None
        log.info("copying %s (%s) to %s as %s", step.source_snapshot_id, step.mount_point, step.region, copy_id)
        return copy_id

    made = run_all(start, list(plan.steps))
    copies: dict[str, list[dict[str, str]]] = {}
    waiting = dict(plan.waiting)
    for step, copy_id in zip(plan.steps, made):
        if copy_id is None:
            waiting[step.region] = waiting.get(step.region, 0) + 1
            continue
        copies.setdefault(step.region, []).append({"source": step.source_snapshot_id, "copy": copy_id,
                                                   "mount_point": step.mount_point, "snapshot_set": step.snapshot_set})
    return {"snapshotter": plan.snapshotter, "copies": copies, "waiting": waiting}
