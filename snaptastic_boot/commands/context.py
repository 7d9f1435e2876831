"""What every command starts from: tunables, metadata, userdata and settings, and the adapters to act with.

`Adapters` is the one seam between the commands and the outside world: the CLI uses the real ones, unit tests
give in-memory ones. Heavy imports (boto3) happen only when a command asks for EC2.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snaptastic_boot import messages, metrics
from snaptastic_boot.apply.freeze import thaw_leftovers
from snaptastic_boot.apply.hooks import Hooks
from snaptastic_boot.config import settings as settings_mod
from snaptastic_boot.config import userdata as userdata_mod
from snaptastic_boot.errors import BadInput, ValidationFailed
from snaptastic_boot.model import SnapshotterSpec, VolumeSpec, clash_problems
from snaptastic_boot.snapshotter import Snapshotter
from snaptastic_boot.system.imds import ImdsClient, InstanceMetadata
from snaptastic_boot.system.interfaces import DeviceAdapter, Ec2Api
from snaptastic_boot.system.paths import Paths
from snaptastic_boot.tunables import Tunables

log = logging.getLogger("snaptastic")


@dataclass(frozen=True)
class Inputs:
    """What every command takes from its command line."""

    config: str | None = None
    userdata: str | None = None


def _real_ec2(region: str, tunables: Tunables) -> Ec2Api:
    from snaptastic_boot.system.ec2 import Ec2

    return Ec2(region, endpoint=tunables.ec2_endpoint, credentials_timeout=tunables.credentials_timeout,
               credentials_attempts=tunables.credentials_attempts, deadline=tunables.api_deadline)


def _real_devices(paths: Paths) -> DeviceAdapter:
    from snaptastic_boot.system.devices import Devices

    return Devices(paths)


def _real_imds(tunables: Tunables) -> Any:
    return ImdsClient(tunables.imds_endpoint, budget=tunables.imds_timeout)


@dataclass(frozen=True)
class Adapters:
    """How the commands reach EC2, the metadata service and this host's devices."""

    imds: Callable[[Tunables], Any] = _real_imds
    ec2: Callable[[str, Tunables], Ec2Api] = _real_ec2
    devices: Callable[[Paths], DeviceAdapter] = _real_devices

    @staticmethod
    def default() -> Adapters:
        """The real ones; unit tests replace this to run every command against in-memory adapters."""
        return Adapters()


@dataclass
class Context:
    tunables: Tunables
    adapters: Adapters
    imds: Any
    metadata: InstanceMetadata
    userdata: dict[str, Any]
    settings: settings_mod.Settings

    def snapshotter(self, name: str) -> tuple[Snapshotter, SnapshotterSpec]:
        snap = self.settings.snapshotter(name, self.userdata, self.metadata.as_dict())
        return snap, settings_mod.resolve(snap)

    def ec2(self, region: str | None = None) -> Ec2Api:
        client = self.adapters.ec2(region or self.metadata.region, self.tunables)
        metrics.observe_ec2(client)
        return client


def load_settings(inputs: Inputs, tunables: Tunables) -> settings_mod.Settings:
    if inputs.config:
        return settings_mod.load(Path(inputs.config), explicit=True)
    return settings_mod.load(Path(tunables.config_path), explicit=tunables.config_explicit)


def build(inputs: Inputs, tunables: Tunables | None = None, adapters: Adapters | None = None) -> Context:
    tunables = tunables or Tunables.from_env()
    adapters = adapters or Adapters.default()
    settings = load_settings(inputs, tunables)
    imds = adapters.imds(tunables)
    metadata = imds.instance_metadata()
    if inputs.userdata is not None:
        raw: bytes | str | None = inputs.userdata
        source = "--userdata"
    else:
        raw = imds.user_data()
        source = "instance userdata"
    data = userdata_mod.parse(raw)
    log.debug("userdata from %s: %s", source, userdata_mod.redacted(data))
    return Context(tunables, adapters, imds, metadata, data, settings)


@dataclass
class Run:
    """Everything a command that changes the instance works with, checked before anything changes."""

    ctx: Context
    snapshotter: Snapshotter
    spec: SnapshotterSpec
    ec2: Ec2Api
    devices: DeviceAdapter
    hooks: Hooks = field(init=False)

    def __post_init__(self) -> None:
        self.hooks = Hooks(self.snapshotter)

    @property
    def paths(self) -> Paths:
        return self.ctx.tunables.paths


def clashes(ctx: Context, name: str | None = None) -> list[tuple[str, str]]:
    """Devices or mount points that two configured snapshotters claim (those involving `name`, when given)."""
    found: dict[str, list[VolumeSpec]] = {}
    for other in ctx.settings.names:
        try:
            found[other] = [v.spec() for v in ctx.settings.snapshotter(other, ctx.userdata, ctx.metadata.as_dict()).get_volumes()]
        except Exception:
            continue
    return clash_problems(found, name)


def start(ctx: Context, name: str) -> Run:
    snap, spec = ctx.snapshotter(name)
    problems = clashes(ctx, name)
    if problems:
        raise ValidationFailed("config", problems)
    return Run(ctx, snap, spec, ctx.ec2(), ctx.adapters.devices(ctx.tunables.paths))


def recover(run: Run) -> None:
    """What every command that touches the snapshotter's mount points does first, under the lock."""
    mounted = [m.mount_point for m in run.devices.mounts()]
    thaw_leftovers([v.mount_point for v in run.spec.volumes], mounted, run.devices.thaw)


def throttling(ec2: Ec2Api) -> str:
    """How long the run waited on EC2's throttling, for the closing log line ("" when it did not)."""
    return f"; waited {ec2.throttle_wait:.1f}s on {ec2.throttled} throttled answers" if ec2.throttled else ""


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def show_plan(plan: Any, as_json: bool, **render: Any) -> int:
    """What --dry-run prints: the plan as text, or as JSON with --json."""
    if as_json:
        print_json(plan.as_dict(**render))
    else:
        print(plan.render(**render))
    return 0


def confirm(question: str) -> bool:
    """Ask on stderr, read one line from stdin (a terminal or a pipe); no answer at all is an error."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    line = sys.stdin.readline() if sys.stdin is not None and not sys.stdin.closed else ""
    if not line:
        raise BadInput(messages.no_answer(question))
    return line.strip().lower() in ("y", "yes", "yeay")
