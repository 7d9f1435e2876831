"""snaptastic check-backups: alert when the newest snapshot of an in-use mount point is older than --age."""

from __future__ import annotations

from snaptastic_boot import messages, tags
from snaptastic_boot.commands.context import Adapters, Inputs, build, print_json
from snaptastic_boot.errors import BadInput
from snaptastic_boot.plan import backups
from snaptastic_boot.tunables import Tunables


def run(inputs: Inputs, *, age: str = "1d", given: dict[str, str] | None = None, as_json: bool = False,
        tunables: Tunables | None = None, adapters: Adapters | None = None) -> int:
    tunables = tunables or Tunables.from_env()
    adapters = adapters or Adapters.default()
    max_age = backups.parse_age(age)
    given = {k: v for k, v in (given or {}).items() if v}
    if len(given) < len(tags.IDENTITY_KEYS):
        ctx = build(inputs, tunables, adapters)
        wanted = {**{k: ctx.userdata.get(k) for k in tags.IDENTITY_KEYS}, **given}
        region = ctx.metadata.region
    else:
        # All tags given: this may run on a monitoring host, where the standard region variables say where.
        wanted = dict(given)
        region = tunables.region or adapters.imds(tunables).instance_metadata().region
    missing = [k for k, v in wanted.items() if not v]
    if missing:
        raise BadInput(messages.check_backups_tag_missing(missing[0]))
    ec2 = adapters.ec2(region, tunables)
    filters = tags.tag_filters({k: str(v) for k, v in wanted.items()})
    result = backups.evaluate(ec2.describe_volumes(filters=[*filters, {"Name": "status", "Values": ["in-use"]}]),
                              ec2.describe_snapshots(filters), max_age)
    if as_json:
        print_json([r.as_dict() for r in result])
    else:
        for r in result:
            print(r.line())
        if not result:
            print("UNKNOWN: no in-use volumes with these tags")
    return 0 if result and all(r.ok for r in result) else 1
