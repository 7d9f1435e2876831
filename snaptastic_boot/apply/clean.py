"""clean, applying: delete what the plan lists, one call each, logging each deletion."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from snaptastic_boot.plan.clean import Deletion
from snaptastic_boot.system.interfaces import Ec2Api

log = logging.getLogger("snaptastic.retention")


def delete_all(ec2: Ec2Api, plan: Sequence[Deletion]) -> None:
    for d in plan:
        if d.kind == "snapshot":
            ec2.delete_snapshot(d.resource_id)
        else:
            ec2.delete_volume(d.resource_id)
        log.info("deleted %s", d.describe())
