"""`python -m bench.fleet`: a boot storm of one cluster against EC2's token buckets.

M instances of one cluster (each its own instance id, metadata service, devices and mount namespace) start
mount-snapshots at the same moment, K volumes each, restoring from snapshots; then all run make-snapshots at
the same moment (the hourly timer without its random delay). The lab throttles with EC2's published token
buckets scaled by --scale. Reported: runs succeeded (target: all), duplicate or leaked volumes (target: none),
total wall time against the lower bound the buckets allow (target: at most 1.3 x), calls per instance and the
share throttled, and the slowest instance's time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import agent, scenarios
from snaptastic_lab.namespace import own_namespace_argv

TARGET_RATIO = 1.3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.splitlines()[0])
    p.add_argument("--instances", "-m", type=int, default=24, help="instances booting at once (default 24)")
    p.add_argument("--volumes", "-k", type=int, default=2, help="volumes each (default 2)")
    p.add_argument("--scale", type=float, default=0.1, help="token bucket sizes and rates times this (default 0.1)")
    p.add_argument("--python", help="interpreter that runs the agent (default: .venv/bin/python if present)")
    p.add_argument("--workdir", type=Path, help="where the lab goes (default: the system temp directory)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH ('-': stdout)")
    args = p.parse_args(argv)
    if not 1 <= args.instances <= 64 or not 1 <= args.volumes <= 8 or args.scale <= 0:
        p.error("--instances 1 to 64, --volumes 1 to 8, --scale above 0")
    return args


class Member:
    """One instance of the fleet: a process in a mount namespace of its own (a machine of its own, whose
    mounts stay between its commands and never collide with the others' same mount points), which runs the
    agent each time it is told to."""

    def __init__(self, python: str, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(own_namespace_argv([python, "-m", "bench.fleet", "--member", json.dumps(argv)]),
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=agent.ROOT)

    def start(self, args: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(60)


def member(argv: list[str]) -> int:
    """The member's side: for each line (the agent's arguments), run the agent, answer with one JSON line."""
    for line in sys.stdin:
        started = time.monotonic()
        done = subprocess.run([*argv, *json.loads(line)], capture_output=True, text=True, check=False)
        print(json.dumps({"returncode": done.returncode, "seconds": time.monotonic() - started,
                          "stderr": done.stderr[-2000:]}), flush=True)
    return 0


def storm(members: list[Member], args: list[str]) -> list[dict[str, Any]]:
    """Every instance starts the agent at the same moment; wait for all."""
    for m in members:
        m.start(args)
    return [m.result() for m in members]


def phase(lab: Any, scale: float, members: list[Member], args: list[str]) -> dict[str, Any]:
    buckets = lab.throttle(scale)  # full buckets at the start of each phase, as after a quiet hour
    lab.reset_calls()
    t0 = time.monotonic()
    runs = storm(members, args)
    wall = time.monotonic() - t0
    calls = len(lab.calls)
    refused = sum(buckets.refused.values())
    bound = buckets.lower_bound()
    return {
        "succeeded": sum(r["returncode"] == 0 for r in runs), "runs": len(runs), "wall_s": round(wall, 1),
        "lower_bound_s": round(bound, 1), "ratio": round(wall / bound, 2) if bound else None,
        "slowest_s": round(max(r["seconds"] for r in runs), 1), "calls_per_instance": round(calls / len(runs), 1),
        "throttled_share": round(refused / calls, 3) if calls else 0.0,
        "failures": [r["stderr"].strip().splitlines()[-1:] for r in runs if r["returncode"] != 0][:3],
    }


def volumes_check(lab: Any, instance_ids: list[str], per_instance: int) -> dict[str, int]:
    vols = [v for v in lab.ec2.describe_volumes(Filters=[{"Name": "tag-key", "Values": ["mount_point"]}])["Volumes"]
            if v["State"] not in ("deleting", "deleted")]
    mine: dict[str, int] = {}
    leaked = 0
    for v in vols:
        owner = {t["Key"]: t["Value"] for t in v.get("Tags", [])}.get("instance_id")
        attached = [a["InstanceId"] for a in v.get("Attachments") or []]
        if owner in instance_ids and attached == [owner]:
            mine[owner] = mine.get(owner, 0) + 1
        elif owner in instance_ids:
            leaked += 1
    return {"duplicates": sum(max(0, n - per_instance) for n in mine.values()), "leaked": leaked,
            "missing": sum(max(0, per_instance - mine.get(i, 0)) for i in instance_ids)}


def run(m: int, k: int, scale: float, python: str, workdir: Path | None) -> dict[str, Any]:
    argv = agent.agent_argv(python)
    opts = scenarios.Options(latency=0.0, sizes=[k], repetitions=1, snapshots=0, matching=1, device_style="nvme",
                             python=python, argv=argv, workdir=workdir)
    with scenarios.fresh_lab(opts) as lab:
        scenarios.configure(lab, k)
        scenarios.call(opts, lab, "mount-snapshots", scenarios.NAME).check()
        scenarios.call(opts, lab, "unmount-snapshots", scenarios.NAME, "--yes", "--delete").check()  # the snapshots stay
        neighbours = [lab.add_neighbour() for _ in range(m)]
        members = [Member(python, argv, n.env) for n in neighbours]
        try:
            restore = phase(lab, scale, members, ["mount-snapshots", scenarios.NAME])
            restore.update(volumes_check(lab, [n.instance_id for n in neighbours], k))
            snapshot = phase(lab, scale, members, ["make-snapshots", scenarios.NAME])
        finally:
            for mem in members:
                mem.close()  # its namespace, and the mounts in it, go with it
    return {"instances": m, "volumes_each": k, "scale": scale, "mount_snapshots": restore, "make_snapshots": snapshot}


def table(result: dict[str, Any]) -> str:
    lines = [f"Fleet: {result['instances']} instances x {result['volumes_each']} volumes, token buckets x {result['scale']}",
             "| phase | succeeded | wall (s) | lower bound (s) | ratio (target <= 1.3) | slowest (s) | calls/instance | throttled |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in ("mount_snapshots", "make_snapshots"):
        r = result[name]
        lines.append(f"| {name.replace('_', '-')} | {r['succeeded']}/{r['runs']} | {r['wall_s']} | {r['lower_bound_s']} | "
                     f"{r['ratio'] if r['ratio'] is not None else 'n/a'} | {r['slowest_s']} | {r['calls_per_instance']} | "
                     f"{r['throttled_share']:.0%} |")
    r = result["mount_snapshots"]
    lines.append(f"Volumes: {r['duplicates']} duplicate, {r['leaked']} leaked, {r['missing']} missing (target: none)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--member"]:
        return member(json.loads(argv[1]))
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench.fleet: needs root (loop devices and mounts); run it with sudo", file=sys.stderr)
        return 3
    from snaptastic_lab.namespace import enter_private_namespace, in_private_namespace

    if not in_private_namespace():
        enter_private_namespace()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    result = run(args.instances, args.volumes, args.scale, args.python or agent.default_python(), args.workdir)
    print(table(result), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json == "-":
        json.dump(result, sys.stdout, indent=2)
    elif args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
