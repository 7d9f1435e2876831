"""snaptastic check-backups: alert when the newest backup of an in-use mount point is too old or incomplete.

On an instance it checks every configured snapshotter (or the one named) with its own filter tags; with
explicit tags (`--tag KEY=VALUE`, or all of --role/--cluster/--environment) it runs off EC2 too, in the
region of AWS_REGION.
"""

from __future__ import annotations

from collections.abc import Sequence

from snaptastic_boot import messages, metrics, tags
from snaptastic_boot.commands.context import Adapters, Inputs, build, print_json
from snaptastic_boot.errors import BadInput
from snaptastic_boot.plan import backups
from snaptastic_boot.tunables import Tunables


def run(inputs: Inputs, *, name: str | None = None, age: str = "1d", given: dict[str, str | None] | None = None,
        tag_args: Sequence[str] = (), region: str | None = None, as_json: bool = False,
        tunables: Tunables | None = None, adapters: Adapters | None = None) -> int:
    """`region`: check that region's snapshots (a destination of copy-snapshots) instead of the instance's."""
    tunables = tunables or Tunables.from_env()
    adapters = adapters or Adapters.default()
    max_age = backups.parse_age(age)
    shorthand = {k: v for k, v in (given or {}).items() if v}
    explicit = {**shorthand, **backups.parse_tags(tag_args)}
    groups: list[tuple[str, dict[str, str]]]
    if tag_args or len(shorthand) == len(tags.IDENTITY_KEYS):
        # Tags given: this may run on a monitoring host, where the standard region variables say where.
        groups = [("", explicit)]
        home = tunables.region or adapters.imds(tunables).instance_metadata().region
    else:
        ctx = build(inputs, tunables, adapters)
        home = ctx.metadata.region
        names = [name] if name else ctx.settings.names
        if shorthand or not names:
            identity = {**{k: ctx.userdata.get(k) for k in tags.IDENTITY_KEYS}, **shorthand}
            missing = [k for k, v in identity.items() if not v]
            if missing:
                raise BadInput(messages.check_backups_tag_missing(missing[0]))
            groups = [("", {k: str(v) for k, v in identity.items()})]
        else:
            groups = [(n, ctx.snapshotter(n)[1].filter_tags) for n in names]
    ec2 = adapters.ec2(home, tunables)
    metrics.observe_ec2(ec2)
    # The mount points in use here, and their backups here or, with --region, in that destination.
    backups_ec2 = ec2 if region in (None, home) else adapters.ec2(str(region), tunables)
    metrics.observe_ec2(backups_ec2)
    result: list[backups.Freshness] = []
    for label, wanted in groups:
        filters = tags.tag_filters(wanted)
        in_use = ec2.describe_volumes(filters=[*filters, {"Name": "status", "Values": ["in-use"]}])
        result += backups.evaluate(in_use, backups_ec2.describe_snapshots(filters), max_age, snapshotter=label)
    _observe(result)
    if as_json:
        print_json([r.as_dict() for r in result])
    else:
        for r in result:
            print(r.line())
        if not result:
            print("UNKNOWN: no in-use volumes with these tags")
    return 0 if result and all(r.ok for r in result) else 1


def _observe(result: Sequence[backups.Freshness]) -> None:
    oldest: dict[str, float | None] = {}
    for r in result:
        where = {"snapshotter": r.snapshotter or "all", "mount_point": r.mount_point}
        metrics.observe("snaptastic_backup_ok", 1 if r.ok else 0, **where)
        if r.age_seconds is not None:
            metrics.observe("snaptastic_backup_age_seconds", round(r.age_seconds, 1), **where)
        before = oldest.get(where["snapshotter"], 0.0)
        oldest[where["snapshotter"]] = None if r.age_seconds is None or before is None else max(before, r.age_seconds)
    for snapshotter, age in oldest.items():
        if age is not None:
            metrics.observe("snaptastic_newest_complete_set_age_seconds", round(age, 1), snapshotter=snapshotter)
