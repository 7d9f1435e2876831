"""snaptastic copy-snapshots: copy the snapshotter's complete snapshot sets to its destination regions."""

from __future__ import annotations

import logging
from typing import Any

from snaptastic_boot import tags
from snaptastic_boot.apply.copy import apply_copies
from snaptastic_boot.commands.context import Adapters, Inputs, build, print_json, show_plan
from snaptastic_boot.plan import copy
from snaptastic_boot.system import lock
from snaptastic_boot.system.interfaces import Ec2Api
from snaptastic_boot.tunables import Tunables

log = logging.getLogger("snaptastic")

# Copies under way into a region for any snapshotter: EBS's limit of concurrent copies is the region's.
PENDING_COPIES = [{"Name": "tag-key", "Values": [tags.SOURCE_SNAPSHOT_ID]}, {"Name": "status", "Values": ["pending"]}]


def run(name: str, inputs: Inputs, *, dry_run: bool = False, as_json: bool = False, tunables: Tunables | None = None,
        adapters: Adapters | None = None) -> int:
    ctx = build(inputs, tunables, adapters)
    _, spec = ctx.snapshotter(name)
    home = ctx.metadata.region
    clients: dict[str, Ec2Api] = {}

    def ec2_in(region: str) -> Ec2Api:
        if region not in clients:
            clients[region] = ctx.ec2(region)
        return clients[region]

    away = [r for r in spec.destination_regions if r != home]  # one config serves the destination too
    if not away:
        # The periodic unit runs this for every snapshotter: without destinations it makes no call at all.
        log.info("snapshotter '%s' has no destination_regions other than %s; nothing to copy", name, home)
        plan = copy.CopyPlan(spec.name, home, ())
        return show_plan(plan, as_json) if dry_run else _show(plan, apply_copies(plan, ec2_in), as_json)
    with lock.exclusive(ctx.tunables.paths.copy_lock_file):
        filters = tags.snapshot_filters(spec)
        plan = copy.plan_copies(spec, home, ec2_in(home).describe_snapshots(filters),
                                {region: ec2_in(region).describe_snapshots(filters) for region in away},
                                under_way={region: len(ec2_in(region).describe_snapshots(PENDING_COPIES))
                                           for region in away})
        if dry_run:
            return show_plan(plan, as_json)
        report = apply_copies(plan, ec2_in)
    return _show(plan, report, as_json)


def _show(plan: copy.CopyPlan, report: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print_json(report)
        return 0
    for region, started in sorted(report["copies"].items()):
        for c in started:
            print(f"{region}: {c['mount_point']}: {c['source']} -> {c['copy']}")
    for region, count in sorted(report["waiting"].items()):
        if count:
            print(f"{region}: {count} more to copy in a later run (at most {copy.CONCURRENT_COPY_LIMIT} at once)")
    if not plan.steps and not any(report["waiting"].values()):
        print("nothing to copy")
    return 0
