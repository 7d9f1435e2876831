"""A local stand-in for EC2, EBS and the instance metadata service, for testing snaptastic-boot unchanged.

Not part of the shipped `snaptastic_boot` package. Needs root (loop devices, mknod, mount) and a private mount
namespace (the pytest plugin and `python -m snaptastic_lab serve` make one).

    with Lab(workdir, device_style="nvme") as lab:
        lab.ec2.create_volume(...)            # set up and check state through boto3
        lab.faults.throttle_rate = 0.3        # misbehave on purpose
        done = lab.run("mount-snapshots", "solr")   # the agent, as a subprocess with lab.env
        lab.call_counts()["AttachVolume"]

Layout under the workdir: `volumes/vol-*.img` and `snapshots/snap-*.img` (sparse files), `dev/` and `sys/` (the
instance's devices), `etc/fstab`, `run/`, `mnt/` (for mount points), `aws/` (credential files that do not exist).
"""

from snaptastic_lab.faults import Faults
from snaptastic_lab.lab import DEFAULT_USERDATA, Lab

__all__ = ["DEFAULT_USERDATA", "Faults", "Lab"]
