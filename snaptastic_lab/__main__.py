"""`python -m snaptastic_lab serve`: run a lab in the foreground and use it from a shell.

Mounts made against the lab must not reach the host, so the command re-executes itself under
`unshare -m --propagation private` when it is not already in a private mount namespace. Use `--shell` to get a
bash inside that namespace with the lab's environment; the printed `export` lines work from any shell for
commands that do not mount anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snaptastic_lab.devices import DEVICE_STYLES
from snaptastic_lab.lab import _SCRUBBED, DEFAULT_USERDATA, Lab
from snaptastic_lab.namespace import MARKER, in_private_namespace

NEED_ROOT = "the lab needs root: loop devices and mounts"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m snaptastic_lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = sub.add_parser("serve", help="start a lab and wait for Ctrl-C")
    serve.add_argument("--workdir", type=Path, help="where volumes, snapshots, dev and sys go (default: a temporary directory)")
    serve.add_argument("--device-style", choices=DEVICE_STYLES, default="nvme", help="Nitro (nvme) or Xen (xvd) names")
    serve.add_argument("--region", default="us-east-1")
    data = serve.add_mutually_exclusive_group()
    data.add_argument("--userdata", metavar="JSON", help="userdata text (default: the solr example)")
    data.add_argument("--userdata-file", type=Path, metavar="PATH", help="userdata bytes from a file")
    data.add_argument("--no-userdata", action="store_true", help="an instance without userdata (IMDS answers 404)")
    serve.add_argument("--shell", action="store_true", help="run bash with the lab's environment; stop when it exits")
    return parser


def _reexec_private(argv: Sequence[str]) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SystemExit("snaptastic-lab: unshare(1) is missing; cannot make a private mount namespace")
    # unshare execs the command in the same process, so the pid in the marker stays true.
    os.environ[MARKER] = str(os.getpid())
    os.execv(unshare, [unshare, "-m", "--propagation", "private", sys.executable, "-m", "snaptastic_lab", *argv])


def _exports(lab: Lab) -> list[str]:
    lines = [f"unset {name}" for name in _SCRUBBED if name in os.environ]
    changed = {k: v for k, v in lab.env.items() if os.environ.get(k) != v}
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(changed.items())]
    return lines


def serve(args: argparse.Namespace) -> int:
    userdata: Any = DEFAULT_USERDATA
    if args.no_userdata:
        userdata = None
    elif args.userdata is not None:
        userdata = args.userdata
    elif args.userdata_file is not None:
        userdata = args.userdata_file.read_bytes()
    owned = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="snaptastic-lab-")) if owned else args.workdir
    lab = Lab(workdir, device_style=args.device_style, userdata=userdata, region=args.region)
    stopping = threading.Event()

    def stop(_signum: int, _frame: Any) -> None:
        stopping.set()

    try:
        lab.start()
        print(f"# snaptastic lab: instance {lab.instance_id} in {lab.availability_zone}, {lab.device_style} devices")
        print(f"# EC2 {lab.endpoint}  IMDS {lab.imds_endpoint}  workdir {lab.workdir}")
        print(f"# mount points go under {lab.mount_root}; mounts only work inside this lab's namespace (--shell)")
        if isinstance(userdata, dict):
            print(f"# userdata: {json.dumps(userdata)}")
        for line in _exports(lab):
            print(line)
        sys.stdout.flush()
        if args.shell:
            env = {**lab.env, "SNAPTASTIC_LAB": str(lab.workdir)}
            return subprocess.run(["bash", "-i"], env=env, check=False).returncode
        signal.signal(signal.SIGTERM, stop)
        print("# Ctrl-C stops the lab", flush=True)
        try:
            while not stopping.wait(3600):
                pass
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        lab.stop()
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if os.geteuid() != 0:
        print(f"snaptastic-lab: {NEED_ROOT}", file=sys.stderr)
        return 3
    if not in_private_namespace():
        _reexec_private(argv)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
