"""snaptastic test: show metadata, userdata and settings; check credentials and the required tools."""

from __future__ import annotations

import shutil

from snaptastic_boot import messages
from snaptastic_boot.commands.context import Adapters, Context, Inputs, clashes, load_settings
from snaptastic_boot.config import userdata as userdata_mod
from snaptastic_boot.errors import AwsError, BadInput, EnvironmentNotUsable, SnaptasticError
from snaptastic_boot.tunables import Tunables

AUTH_FAILURES = ("AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch",
                 "ExpiredToken", "RequestExpired", "AccessDenied", "OptInRequired")
REQUIRED_TOOLS = ("blkid", "mount", "umount", "fsfreeze", "mkfs.ext4", "resize2fs")
OPTIONAL_TOOLS = ("mkfs.xfs", "xfs_growfs")


def run(inputs: Inputs, tunables: Tunables | None = None, adapters: Adapters | None = None) -> int:
    tunables = tunables or Tunables.from_env()
    adapters = adapters or Adapters.default()
    problems: list[str] = []
    settings = load_settings(inputs, tunables)
    imds = adapters.imds(tunables)
    metadata = imds.instance_metadata()
    print(f"metadata service: {imds.base} (IMDS{imds.version or 'v2'})")
    for key, value in metadata.as_dict().items():
        print(f"  {key}: {value}")
    raw = inputs.userdata if inputs.userdata is not None else imds.user_data()
    try:
        data = userdata_mod.parse(raw)
        print("userdata:")
        for key, value in userdata_mod.redacted(data).items():
            print(f"  {key}: {value}")
    except BadInput as exc:
        print(f"userdata: PROBLEM: {exc}")
        problems.append("userdata")
        data = {}
    print(f"settings file: {settings.python_source or 'none'}")
    print(f"config file: {settings.config_source or 'none'}")
    print(f"snapshotters: {', '.join(settings.names) or 'none'}")
    ctx = Context(tunables, adapters, imds, metadata, data, settings)
    for name in settings.names:
        try:
            _, spec = ctx.snapshotter(name)
            for v in spec.volumes:
                print(f"  {name}: {v.device} -> {v.mount_point} ({v.size} GiB {v.volume_type} {v.filesystem})")
        except BadInput as exc:
            print(f"  {name}: PROBLEM: {exc}")
            problems.append(name)
    for path, message in clashes(ctx):
        print(f"  {path}: PROBLEM: {message}")
        problems.append(path.split(".")[1])
    try:
        instance = ctx.ec2().describe_instance(metadata.instance_id)
        print(f"credentials: ok (EC2 in {metadata.region} sees {instance['InstanceId']}, {instance.get('State', {}).get('Name', '?')})")
    except AwsError as exc:
        if exc.code in AUTH_FAILURES:
            print(f"credentials: PROBLEM: {exc}")
            problems.append("credentials")
        else:  # EC2 answered, so the credentials work; the answer itself is worth showing
            print(f"credentials: ok (EC2 in {metadata.region} answered: {exc.code})")
    except SnaptasticError as exc:
        print(f"credentials: PROBLEM: {exc}")
        problems.append("credentials")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    optional = [t for t in OPTIONAL_TOOLS if shutil.which(t) is None]
    print(f"tools: {'ok' if not missing else 'MISSING ' + ', '.join(missing)}"
          f"{'; without xfs support (install xfsprogs): ' + ', '.join(optional) if optional else ''}")
    if missing or "credentials" in problems:
        raise EnvironmentNotUsable(messages.not_ready(problems + missing))
    if problems:
        raise BadInput(messages.not_ready(problems))
    print("all good")
    return 0
