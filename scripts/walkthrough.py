"""The original snaptastic walkthrough, told again on the local lab with the real agent.

settings file with SolrSnapshotter -> snaptastic test -> list-volumes solr -> mount-snapshots solr ->
write helloworld into /mnt/solr -> make-snapshots solr -> unmount-snapshots solr -> /mnt/solr is gone ->
mount-snapshots solr -> helloworld is back (restored from the snapshot onto a new volume).

Runs in a private mount namespace with a tmpfs over /mnt, so the host's mounts, /mnt and /etc/fstab are
never touched. Usage: python scripts/walkthrough.py [--device-style xen|nvme]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from snaptastic_lab import Lab
from snaptastic_lab.namespace import enter_private_namespace

SETTINGS = textwrap.dedent("""\
    from snaptastic_boot import Snapshotter, EBSVolume


    class SolrSnapshotter(Snapshotter):
        name = 'solr'

        def get_volumes(self):
            volume = EBSVolume('/dev/sdf', '/mnt/solr', size=20)
            volumes = [volume]
            return volumes
""")

USERDATA = {"role": "solr", "cluster": "solr", "environment": "aws"}


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device-style", choices=("nvme", "xen"), default="nvme")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the walkthrough needs root (loop devices and mounts); run it with sudo", file=sys.stderr)
        return 3
    # Always a namespace of our own (even inside another private one), so the tmpfs below goes with us.
    enter_private_namespace()
    # A tmpfs over /mnt inside our namespace: /mnt/solr exists only for this run.
    subprocess.run(["mount", "-t", "tmpfs", "walkthrough", "/mnt"], check=True)
    with tempfile.TemporaryDirectory(prefix="snaptastic-walkthrough-") as tmp:
        work = Path(tmp)
        settings_dir = work / "settings"
        settings_dir.mkdir()
        (settings_dir / "snaptastic_settings.py").write_text(SETTINGS)
        with Lab(work / "lab", device_style=args.device_style, userdata=USERDATA) as lab:
            env = {**lab.env, "PYTHONPATH": str(settings_dir)}
            env.pop("SNAPTASTIC_CONFIG", None)

            def snaptastic(*argv: str) -> None:
                print(f"$ sudo snaptastic {' '.join(argv)}", flush=True)
                done = subprocess.run([sys.executable, "-m", "snaptastic_boot", *argv], env=env, timeout=300)
                if done.returncode != 0:
                    raise SystemExit(f"snaptastic {argv[0]} failed with exit code {done.returncode}")

            say(f"lab: EC2 at {lab.endpoint}, instance {lab.instance_id} ({args.device_style} devices), IMDS with userdata {USERDATA}")
            say("settings file snaptastic_settings.py (on sys.path):")
            print(SETTINGS, end="")
            say("check the set-up")
            snaptastic("test")
            snaptastic("list-volumes", "solr")
            say("mount-snapshots: no snapshot yet, so a new volume is created, formatted and mounted")
            snaptastic("mount-snapshots", "solr")
            say("lets add a file to it")
            Path("/mnt/solr/helloworld").write_text("helloworld\n")
            print("$ sudo sh -c 'echo helloworld > /mnt/solr/helloworld'")
            say("time to make a snapshot of this important change")
            snaptastic("make-snapshots", "solr")
            say("destroying our work")
            snaptastic("unmount-snapshots", "solr", "--yes")
            gone = not Path("/mnt/solr/helloworld").exists() and not os.path.ismount("/mnt/solr")
            print(f"/mnt/solr is {'gone' if gone else 'STILL MOUNTED'}")
            if not gone:
                return 1
            say("restoring from backups")
            snaptastic("mount-snapshots", "solr")
            content = Path("/mnt/solr/helloworld").read_text() if Path("/mnt/solr/helloworld").exists() else None
            print(f"$ cat /mnt/solr/helloworld\n{content or '(missing)'}", end="\n" if content is None else "")
            snaptastic("list-volumes", "solr")
            if content != "helloworld\n":
                say("FAILED: helloworld did not come back")
                return 1
            say("helloworld is back: restored from its snapshot onto a new volume")
            subprocess.run(["umount", "/mnt/solr"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
