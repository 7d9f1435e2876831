"""The measurements. Each takes the run's options and returns plain data (also written as JSON).

Every point starts from a fresh lab, so numbers do not depend on what an earlier point left behind. Set-up
(making volumes and their snapshots, thousands of snapshots in the account) runs without added latency;
only the timed agent command sees `latency` on each EC2 call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import agent

NAME = "solr"
DEVICES = [f"/dev/sd{c}" for c in "fghijklmnopqrstuvwxyz"]  # as EC2 accepts for data volumes
HEAVY_MODULES = ("boto3", "botocore", "requests", "jsonschema", "urllib3")


@dataclass
class Options:
    latency: float  # seconds added to every EC2 call of the timed commands
    sizes: list[int]
    repetitions: int
    snapshots: int  # snapshots in the account for the resolution point
    matching: int  # of which this many belong to the snapshotter's mount point
    device_style: str
    python: str
    argv: list[str]  # how the agent is started
    workdir: Path | None = None


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


@contextlib.contextmanager
def fresh_lab(opts: Options) -> Iterator[Any]:
    from snaptastic_lab import Lab

    with tempfile.TemporaryDirectory(prefix="snaptastic-bench-", dir=opts.workdir) as tmp:
        lab = Lab(Path(tmp) / "lab", device_style=opts.device_style)
        lab.start()
        try:
            yield lab
        finally:
            lab.stop()


def configure(lab: Any, n: int) -> None:
    if n > len(DEVICES):
        raise ValueError(f"at most {len(DEVICES)} volumes")
    vols = [{"device": DEVICES[i], "mount_point": str(lab.mount_root / f"data{i}"), "size": 1} for i in range(n)]
    path = Path(lab.workdir) / "snaptastic.json"
    path.write_text(json.dumps({"snapshotters": {NAME: {"volumes": vols}}}))
    lab.env["SNAPTASTIC_CONFIG"] = str(path)


def call(opts: Options, lab: Any, *args: str, env: dict[str, str] | None = None) -> agent.Run:
    return agent.run(opts.argv, list(args), {**lab.env, **(env or {})})


def held_beyond_call(opts: Options, lab: Any, n: int, env: dict[str, str] | None = None) -> tuple[agent.Run, float, float]:
    """make-snapshots with an application writing to each of the N file systems meanwhile: the run, the
    application's longest write (ms), and the CreateSnapshots call as the lab served it (ms)."""
    with writing(opts, [lab.mount_root / f"data{i}" for i in range(n)]) as stalls:
        made = call(opts, lab, "make-snapshots", NAME, "--json", env=env)
    served = [(end - start) * 1000 for action, start, end in lab.served if action == "CreateSnapshots"]
    return made, max((w["ms"] for w in stalls.values()), default=0.0), served[-1] if served else 0.0


def round_trip_ms(lab: Any, samples: int = 5) -> float:
    """One EC2 API round trip at the current latency, from a client in this process (DescribeInstances)."""
    client = lab.ec2_client(max_attempts=1)
    client.describe_instances(InstanceIds=[lab.instance_id])  # connection set up outside the timing
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        client.describe_instances(InstanceIds=[lab.instance_id])
        times.append((time.perf_counter() - t0) * 1000)
    return median(times)


@contextlib.contextmanager
def writing(opts: Options, mount_points: list[Path]) -> Iterator[dict[str, dict[str, float]]]:
    """An application appending to every file system meanwhile (bench/writer.py, its own process); the dict is
    filled at the end with each one's longest write."""
    found: dict[str, dict[str, float]] = {}
    proc = subprocess.Popen([opts.python, "-m", "bench.writer", *map(str, mount_points)], cwd=agent.ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("bench.writer did not start")
    try:
        yield found
    finally:
        out, _ = proc.communicate(timeout=30)
        found.update(json.loads(out))


# -- 1 and 2: mount-snapshots and make-snapshots for N volumes ----------------------------------------------------


def volumes_point(opts: Options, n: int) -> dict[str, Any]:
    """Restore N volumes from snapshots on a new instance (timed), then snapshot them again (freeze timed)."""
    restores: list[dict[str, Any]] = []
    snapshots: list[dict[str, Any]] = []
    with fresh_lab(opts) as lab:
        configure(lab, n)
        # Set-up without latency: volumes with data, snapshotted, then let go of.
        call(opts, lab, "mount-snapshots", NAME).check()
        for i in range(n):
            (lab.mount_root / f"data{i}" / "payload").write_bytes(os.urandom(64 * 1024))
        call(opts, lab, "make-snapshots", NAME).check()
        call(opts, lab, "unmount-snapshots", NAME, "--yes", "--delete").check()
        lab.faults.latency = opts.latency
        rtt = round_trip_ms(lab)
        lab.faults.latency = 0.0
        for _ in range(opts.repetitions):
            lab.new_instance()
            lab.reset_calls()
            lab.faults.latency = opts.latency
            done = call(opts, lab, "mount-snapshots", NAME, "--json")
            lab.faults.latency = 0.0
            report = done.json()
            counts = Counter(action for _, action in lab.calls)
            restored = [v for v in report["volumes"] if v.get("snapshot_id")]
            intact = all((lab.mount_root / f"data{i}" / "payload").exists() for i in range(n))
            restores.append({
                "wall_s": round(done.wall_s, 3),
                "agent_s": report.get("seconds"),
                "calls": sum(counts.values()),
                "calls_by_action": dict(sorted(counts.items())),
                "restored_from_snapshot": len(restored),
                "data_intact": intact,
                "maxrss_kb": done.maxrss_kb,
            })
            lab.reset_calls()
            lab.faults.latency = opts.latency
            made, stall_ms, served_ms = held_beyond_call(opts, lab, n, {"SNAPTASTIC_EXPEDITE_FREEZE": "1"})
            made_counts = Counter(action for _, action in lab.calls)
            # The same with normal RCU grace periods during the freeze (SNAPTASTIC_EXPEDITE_FREEZE=0).
            lab.reset_calls()
            slow, slow_stall_ms, slow_served_ms = held_beyond_call(opts, lab, n, {"SNAPTASTIC_EXPEDITE_FREEZE": "0"})
            slow.check()
            lab.faults.latency = 0.0
            made_report = made.json()
            snapshots.append({
                "writer_stall_ms": stall_ms,
                "served_call_ms": round(served_ms, 1),
                "stall_overhead_ms": round(stall_ms - served_ms, 1),
                "normal_rcu_stall_overhead_ms": round(slow_stall_ms - slow_served_ms, 1),
                "wall_s": round(made.wall_s, 3),
                "freeze_ms": made_report["freeze_ms"],
                "blocked_ms": made_report.get("blocked_ms", made_report["freeze_ms"]),
                "api_ms": made_report["api_ms"],
                "snapshots": len(made_report["snapshots"]),
                "create_snapshots_calls": made_counts.get("CreateSnapshots", 0),
                "create_snapshot_calls": made_counts.get("CreateSnapshot", 0),
                "calls_by_action": dict(sorted(made_counts.items())),
                "fallback": made_report["fallback"],
            })
            call(opts, lab, "unmount-snapshots", NAME, "--yes", "--delete").check()
    return {"n": n, "round_trip_ms": round(rtt, 1), "restores": restores, "snapshots": snapshots}


def summarize_volumes(points: list[dict[str, Any]], latency: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    mount_rows: list[dict[str, Any]] = []
    make_rows: list[dict[str, Any]] = []
    for p in points:
        n = p["n"]
        restores = p["restores"]
        wall = median([r["wall_s"] for r in restores])
        by_action: Counter[str] = Counter()
        for r in restores:  # the most calls any repetition made, per action
            for action, count in r["calls_by_action"].items():
                by_action[action] = max(by_action[action], count)
        calls = max(r["calls"] for r in restores)
        mount_rows.append({
            "n": n,
            "wall_s": round(wall, 3),
            "wall_runs_s": [r["wall_s"] for r in restores],
            "agent_s": median([r["agent_s"] or 0.0 for r in restores]),
            "ratio": None,
            "calls": calls,
            "call_budget": 2 * n + 6,
            "calls_by_action": dict(sorted(by_action.items())),
            "restored_from_snapshot": min(r["restored_from_snapshot"] for r in restores),
            "data_intact": all(r["data_intact"] for r in restores),
            "maxrss_kb": max(r["maxrss_kb"] for r in restores),
        })
        snaps = p["snapshots"]
        freeze = median([s["freeze_ms"] for s in snaps])
        rtt = p["round_trip_ms"]
        make_rows.append({
            "n": n,
            "freeze_ms": round(freeze, 1),
            "freeze_runs_ms": [s["freeze_ms"] for s in snaps],
            "blocked_ms": round(median([s["blocked_ms"] for s in snaps]), 1),
            "api_ms": round(median([s["api_ms"] for s in snaps]), 1),
            "outside_call_ms": round(median([s["freeze_ms"] - s["api_ms"] for s in snaps]), 1),
            "writer_stall_ms": round(median([s["writer_stall_ms"] for s in snaps]), 1),
            "served_call_ms": round(median([s["served_call_ms"] for s in snaps]), 1),
            "stall_overhead_ms": round(median([s["stall_overhead_ms"] for s in snaps]), 1),
            "normal_rcu_stall_overhead_ms": round(median([s["normal_rcu_stall_overhead_ms"] for s in snaps]), 1),
            "round_trip_ms": rtt,
            "latency_ms": round(latency * 1000, 1),
            "ratio": round(freeze / rtt, 2) if rtt > 0 else None,
            "create_snapshots_calls": max(s["create_snapshots_calls"] for s in snaps),
            "create_snapshot_calls": max(s["create_snapshot_calls"] for s in snaps),
            "snapshots": min(s["snapshots"] for s in snaps),
            "fallback": any(s["fallback"] for s in snaps),
        })
    one = next((r["wall_s"] for r in mount_rows if r["n"] == 1), None)
    for r in mount_rows:
        r["ratio"] = round(r["wall_s"] / one, 2) if one else None
    return mount_rows, make_rows


# -- 3: snapshot resolution among many snapshots -------------------------------------------------------------------


def _fill_account(lab: Any, total: int, matching: int) -> list[str]:
    """`total` completed snapshots straight into moto's backend, `matching` of them for data0; returns those."""
    backend = lab.backend
    volume = backend.create_volume(size=1, zone_name=lab.availability_zone)
    ours = {**_userdata(lab), "mount_point": str(lab.mount_root / "data0")}
    base = dt.datetime(2026, 1, 1)
    match_every = max(1, total // max(1, matching))
    matched: list[str] = []
    for i in range(total):
        snap = backend.create_snapshot(volume.id, f"bench snapshot {i}")
        snap.start_time = base + dt.timedelta(seconds=i)
        if len(matched) < matching and i % match_every == 0:
            tags = ours
            matched.append(snap.id)
        elif i % 3 == 0:  # the same cluster's other mount points
            tags = {**ours, "mount_point": f"/mnt/other{i % 7}"}
        elif i % 3 == 1:  # other clusters with the same mount point
            tags = {**ours, "cluster": f"cluster-{i % 101}"}
        else:  # untagged
            tags = {}
        if tags:
            backend.create_tags([snap.id], tags)
    return matched


def _userdata(lab: Any) -> dict[str, str]:
    from snaptastic_lab.lab import DEFAULT_USERDATA

    return {k: str(v) for k, v in DEFAULT_USERDATA.items()}


def _filters_of(params: dict[str, str]) -> list[dict[str, Any]]:
    filters = []
    number = 1
    while f"Filter.{number}.Name" in params:
        values = []
        index = 1
        while f"Filter.{number}.Value.{index}" in params:
            values.append(params[f"Filter.{number}.Value.{index}"])
            index += 1
        filters.append({"Name": params[f"Filter.{number}.Name"], "Values": values})
        number += 1
    return filters


@contextlib.contextmanager
def indexed_moto_tags() -> Iterator[None]:
    """moto looks a resource's tags up by scanning every tag in the account, once per resource and filter, so a
    filtered DescribeSnapshots over 10,000 tagged snapshots takes moto minutes (EC2 answers in well under a
    second). For the resolution point the lookup goes through moto's own tag dictionary by resource id instead:
    the same tags in the same form, without the scan. What the agent sends and receives is unchanged.
    """
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    scanning = TaggedEC2Resource.get_tags

    def get_tags(self: Any) -> list[dict[str, str]]:
        if not self.id:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
        return [{"resource_id": self.id, "key": k, "value": v, "resource_type": kind}
                for k, v in self.ec2_backend.tags.get(self.id, {}).items()]

    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]
    try:
        yield
    finally:
        TaggedEC2Resource.get_tags = scanning  # type: ignore[method-assign]


def resolution_point(opts: Options, total: int, matching: int) -> dict[str, Any]:
    with fresh_lab(opts) as lab, indexed_moto_tags():
        configure(lab, 1)
        t0 = time.perf_counter()
        matched = _fill_account(lab, total, matching)
        fill_s = time.perf_counter() - t0
        newest = matched[-1] if matched else None
        runs = []
        for _ in range(opts.repetitions):
            lab.reset_calls()
            lab.faults.latency = opts.latency
            done = call(opts, lab, "mount-snapshots", NAME, "--dry-run", "--json")
            lab.faults.latency = 0.0
            plan = done.json()
            requests = list(lab.requests)
            described = [(stamp, params) for stamp, action, params in requests if action == "DescribeSnapshots"]
            after = [stamp for stamp, action, _ in requests if action != "DescribeSnapshots" and described and stamp > described[0][0]]
            span_ms = ((after[0] if after else time.time()) - described[0][0]) * 1000 if described else 0.0
            chosen = (plan["steps"][0].get("snapshot") or {}).get("snapshot_id")
            runs.append({"wall_s": round(done.wall_s, 3), "resolution_ms": round(span_ms, 1), "pages": len(described),
                         "params": [p for _, p in described], "chosen": chosen})
        params = runs[0]["params"]
        filters = _filters_of(params[0]) if params else []
        tag_filters = sorted(f["Name"] for f in filters if f["Name"].startswith("tag:"))
        owner_self = bool(params) and all(p.get("Owner.1") == "self" for p in params)
        # What those exact requests answer: the snapshots the agent had to read.
        returned = len(lab.ec2.describe_snapshots(OwnerIds=["self"], Filters=filters)["Snapshots"]) if params else 0
    return {
        "snapshots": total,
        "matching": len(matched),
        "fill_s": round(fill_s, 2),
        "wall_s": round(median([r["wall_s"] for r in runs]), 3),
        "resolution_ms": round(median([r["resolution_ms"] for r in runs]), 1),
        "pages": max(r["pages"] for r in runs),
        "returned": returned,
        "tag_filters": tag_filters,
        "owner_self": owner_self,
        "chose_newest": all(r["chosen"] == newest for r in runs),
        "lab_tag_lookup": "indexed by resource id (moto scans every tag per lookup)",
    }


# -- 4: start-up ---------------------------------------------------------------------------------------------------


def _imports(opts: Options, args: list[str], env: dict[str, str]) -> list[str]:
    done = agent.run(opts.argv, args, {**env, "PYTHONPROFILEIMPORTTIME": "1"}, rss=False)
    names = set()
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+\s+\|\s+\d+\s+\|\s+(\S+)", line.strip())
        if m:
            names.add(m.group(1).split(".")[0])
    return sorted(n for n in names if n in HEAVY_MODULES)


def startup_point(opts: Options) -> dict[str, Any]:
    samples = max(5, opts.repetitions)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPROFILE")}
    out: dict[str, Any] = {}
    for flag in ("--version", "--help"):
        agent.run(opts.argv, [flag], env, rss=False)  # warm the page cache
        runs = [agent.run(opts.argv, [flag], env, rss=False).check() for _ in range(samples)]
        out[flag.strip("-") + "_ms"] = round(median([r.wall_s * 1000 for r in runs]), 1)
        out[flag.strip("-") + "_runs_ms"] = [round(r.wall_s * 1000, 1) for r in runs]
    out["version_heavy_imports"] = _imports(opts, ["--version"], env)
    out["help_heavy_imports"] = _imports(opts, ["--help"], env)
    runs = [agent.run([opts.python], ["-c", "pass"], env, rss=False) for _ in range(samples)]
    out["bare_interpreter_ms"] = round(median([r.wall_s * 1000 for r in runs]), 1)
    with fresh_lab(opts) as lab:
        configure(lab, 1)
        firsts = []
        walls = []
        for _ in range(samples):
            lab.reset_calls()
            lab.faults.latency = opts.latency
            done = call(opts, lab, "mount-snapshots", NAME, "--dry-run").check()
            lab.faults.latency = 0.0
            calls = list(lab.calls)
            if calls:
                firsts.append((calls[0][0] - done.started) * 1000)
            walls.append(done.wall_s * 1000)
        out["first_ec2_call_ms"] = round(median(firsts), 1)
        out["first_ec2_call_runs_ms"] = [round(f, 1) for f in firsts]
        out["dry_run_ms"] = round(median(walls), 1)
    return out
