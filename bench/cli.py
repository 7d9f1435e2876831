"""`python -m bench`: run every measurement, print the table, write JSON and the Markdown section.

Exit status: 0, or 1 with --strict when a target is missed; 3 when not root. Timing targets never fail a
run without --strict, so a smoke run on a slow machine keeps passing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="Benchmark snaptastic-boot's CLI against the lab.")
    p.add_argument("--latency-ms", type=float, default=50.0, help="added to every EC2 API call of the timed commands (default 50)")
    p.add_argument("--sizes", default="1,4,8,16", help="volume counts for mount-/make-snapshots (default 1,4,8,16)")
    p.add_argument("--repetitions", type=int, default=3, help="runs per point; the median is reported (default 3)")
    p.add_argument("--snapshots", type=int, default=10_000, help="snapshots in the account for the resolution point (default 10000)")
    p.add_argument("--matching", type=int, default=50, help="of which this many match the snapshotter (default 50)")
    p.add_argument("--device-style", choices=("nvme", "xen"), default="nvme", help="how volumes appear (default nvme)")
    p.add_argument("--python", help="interpreter that runs the agent (default: .venv/bin/python if present, else this one)")
    p.add_argument("--workdir", type=Path, help="where lab directories go (default: the system temp directory)")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH", help="write the results as JSON to PATH (or stdout)")
    p.add_argument("--markdown", type=Path, metavar="PATH", help="write a '## Performance' section with the table to PATH")
    p.add_argument("--compare", type=Path, metavar="PATH", help="also show the change against an earlier run's JSON")
    p.add_argument("--fleet", metavar="M,K,SCALE", nargs="?", const="24,2,0.1",
                   help="also run the fleet benchmark (bench/fleet.py): M instances x K volumes against the token "
                        "buckets times SCALE (default 24,2,0.1), its table in the same report")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        p.error("--sizes: a comma list of volume counts, like 1,4,8,16")
    if not args.sizes or min(args.sizes) < 1 or max(args.sizes) > 21:
        p.error("--sizes: counts from 1 to 21")
    if args.fleet:
        try:
            m, k, scale = args.fleet.split(",")
            args.fleet = (int(m), int(k), float(scale))
        except ValueError:
            p.error("--fleet: M,K,SCALE, like 24,2,0.1")
    if args.repetitions < 1 or args.matching < 1 or args.snapshots < args.matching:
        p.error("--repetitions and --matching at least 1, --snapshots at least --matching")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (loop devices and mounts); run it with sudo", file=sys.stderr)
        return 3
    from snaptastic_lab.namespace import enter_private_namespace, in_private_namespace

    if not in_private_namespace():
        enter_private_namespace()  # before any thread: the lab's mounts never reach the host

    from bench import agent, report, scenarios

    python = args.python or agent.default_python()
    opts = scenarios.Options(latency=args.latency_ms / 1000, sizes=args.sizes, repetitions=args.repetitions,
                             snapshots=args.snapshots, matching=args.matching, device_style=args.device_style,
                             python=python, argv=agent.agent_argv(python), workdir=args.workdir)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "taken": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "parameters": {"latency_ms": args.latency_ms, "sizes": args.sizes, "repetitions": args.repetitions,
                       "snapshots": args.snapshots, "matching": args.matching, "device_style": args.device_style,
                       "python": python, "agent": opts.argv},
        "machine": report.machine(python),
    }

    def progress(text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    points = []
    for n in args.sizes:
        progress(f"mount-snapshots and make-snapshots with {n} volume(s)")
        points.append(scenarios.volumes_point(opts, n))
    result["volume_points"] = points
    result["mount_snapshots"], result["make_snapshots"] = scenarios.summarize_volumes(points, opts.latency)
    progress(f"snapshot resolution among {args.snapshots} snapshots")
    result["resolution"] = scenarios.resolution_point(opts, args.snapshots, args.matching)
    if args.snapshots > args.matching:
        result["resolution"]["baseline"] = scenarios.resolution_point(opts, args.matching, args.matching)
    progress("start-up")
    result["startup"] = scenarios.startup_point(opts)
    if args.fleet:
        from bench import fleet

        m, k, scale = args.fleet
        progress(f"a fleet of {m} instances x {k} volumes, token buckets x {scale:g}")
        result["fleet"] = fleet.run(*args.fleet, python, args.workdir)
    biggest = max(result["mount_snapshots"], key=lambda r: r["n"])
    result["memory"] = {"n": biggest["n"], "maxrss_kb": biggest["maxrss_kb"]}
    result["targets"] = report.targets(result)
    text = report.table(result)
    shown = sys.stderr if args.json == "-" else sys.stdout
    print(text, file=shown, flush=True)
    if args.compare:
        print("\n" + report.comparison(json.loads(args.compare.read_text()), result), file=shown, flush=True)
    if args.json == "-":
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    elif args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if args.markdown:
        args.markdown.write_text(report.markdown(result, text))
    failed = [t for t in result["targets"] if not t["pass"]]
    return 1 if failed and args.strict else 0
