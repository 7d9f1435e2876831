"""The table, the targets, the machine description and the Markdown section for the README."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

COMMAND = "sudo bench/run --fleet --json bench/last.json --markdown bench/PERFORMANCE.md   # last.json is not committed"


def machine(python: str) -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 0
    version = subprocess.run([python, "-c", "import platform; print(platform.python_implementation(), platform.python_version())"],
                             capture_output=True, text=True, check=False).stdout.strip()
    revision = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()
    return {"nproc": cpus, "cpu": model, "kernel": platform.release(), "python": version,
            "bench_python": f"{platform.python_implementation()} {platform.python_version()}",
            "load_average": [round(x, 2) for x in os.getloadavg()], "revision": revision or "unknown"}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value, its limit and whether it holds."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, limit: str, ok: bool) -> None:
        out.append({"target": name, "value": value, "limit": limit, "pass": bool(ok)})

    for r in result["mount_snapshots"]:
        add(f"mount-snapshots N={r['n']}: EC2 calls", r["calls"], f"<= {r['call_budget']} (2N+6)", r["calls"] <= r["call_budget"])
    rows = {r["n"]: r for r in result["mount_snapshots"]}
    if 1 in rows and len(rows) > 1:
        top = max(rows)
        add(f"mount-snapshots wall({top}) / wall(1)", rows[top]["ratio"], "<= 2.0", rows[top]["ratio"] <= 2.0)
    for r in result["make_snapshots"]:
        add(f"make-snapshots N={r['n']}: freeze / round trip", r["ratio"], "<= 1.5", r["ratio"] is not None and r["ratio"] <= 1.5)
        add(f"make-snapshots N={r['n']}: CreateSnapshots calls while frozen", r["create_snapshots_calls"], "== 1",
            r["create_snapshots_calls"] == 1 and r["create_snapshot_calls"] == 0)
    made = {r["n"]: r for r in result["make_snapshots"]}
    if made:
        top = 16 if 16 in made else max(made)
        add(f"make-snapshots N={top}: writes held beyond the CreateSnapshots call (ms)",
            made[top]["stall_overhead_ms"], "<= 25", made[top]["stall_overhead_ms"] <= 25)
    res = result["resolution"]
    add("snapshot resolution: server-side tag filters and OwnerIds=self", res["tag_filters"] != [] and res["owner_self"],
        "tag: filters, Owner self", bool(res["tag_filters"]) and res["owner_self"])
    add("snapshot resolution: snapshots returned", res["returned"], f"== {res['matching']} (matching only)",
        res["returned"] == res["matching"])
    add("snapshot resolution: newest matching snapshot chosen", res["chose_newest"], "true", res["chose_newest"])
    start = result["startup"]
    add("snaptastic --version wall time (ms)", start["version_ms"], "< 150", start["version_ms"] < 150)
    add("mount-snapshots: first EC2 call after the process started (ms)", start["first_ec2_call_ms"], "<= 350",
        start["first_ec2_call_ms"] <= 350)
    add("snaptastic --version imports no boto3", ", ".join(start["version_heavy_imports"]) or "none", "no boto3/botocore",
        not {"boto3", "botocore"} & set(start["version_heavy_imports"]))
    fleet = result.get("fleet")
    if fleet:
        for name in ("mount_snapshots", "make_snapshots"):
            r = fleet[name]
            label = name.replace("_", "-")
            add(f"fleet {label}: runs succeeded", f"{r['succeeded']}/{r['runs']}", "all", r["succeeded"] == r["runs"])
            add(f"fleet {label}: wall / token-bucket lower bound", r["ratio"], "<= 1.3",
                r["ratio"] is not None and r["ratio"] <= 1.3)
        r = fleet["mount_snapshots"]
        add("fleet: duplicate, leaked or missing volumes", r["duplicates"] + r["leaked"] + r["missing"], "== 0",
            r["duplicates"] + r["leaked"] + r["missing"] == 0)
    return out


def _calls(by_action: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in by_action.items())


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(result: dict[str, Any]) -> str:
    p = result["parameters"]
    m = result["machine"]
    marks = {t["target"]: t["pass"] for t in result["targets"]}
    lines = [
        f"snaptastic-boot benchmark, {result['taken']}",
        f"parameters: latency {p['latency_ms']:g} ms per EC2 call, {p['repetitions']} repetition(s) per point (median), "
        f"device style {p['device_style']}, volumes 1 GiB sparse, N = {', '.join(map(str, p['sizes']))}",
        f"interpreter: {p['python']} ({m['python']}); agent started as: {' '.join(p['agent'])}",
        f"machine: {m['nproc']} CPU(s), {m['cpu']}, Linux {m['kernel']}; load average at start "
        f"{' '.join(map(str, m['load_average']))}; agent revision {m['revision']}",
        "",
        "1. mount-snapshots, N volumes restored from snapshots on a new instance",
        f"   {'N':>3}  {'wall s':>7}  {'/wall(1)':>8}  {'calls':>5}  {'2N+6':>4}  {'check':<5}  EC2 calls by action",
    ]
    for r in result["mount_snapshots"]:
        ok = marks[f"mount-snapshots N={r['n']}: EC2 calls"]
        lines.append(f"   {r['n']:>3}  {r['wall_s']:>7.2f}  {r['ratio']:>8.2f}  {r['calls']:>5}  {r['call_budget']:>4}  "
                     f"{_mark(ok):<5}  {_calls(r['calls_by_action'])}")
    rows = {r["n"]: r for r in result["mount_snapshots"]}
    if 1 in rows and len(rows) > 1:
        top = max(rows)
        name = f"mount-snapshots wall({top}) / wall(1)"
        lines.append(f"   wall({top}) / wall(1) = {rows[top]['ratio']:.2f} (target <= 2.0): {_mark(marks[name])}")
    lines += [
        "",
        "2. make-snapshots, N mounted volumes: freeze window (max over volumes) against one API round trip",
        "   (round trip: DescribeInstances from the bench at the same latency; CreateSnapshots ms: that call as the",
        "   agent timed it, lab work included; outside: frozen but not in the call, i.e. freezing and thawing;",
        "   writes held: from the start of the freeze calls, which flush what the filesystem still had dirty;",
        "   writer: an application appending 512 B every 2 ms to each file system, its longest write, against the",
        "   CreateSnapshots call as the lab served it; beyond: what the agent adds, the call being the physical limit;",
        "   normal RCU: beyond, with SNAPTASTIC_EXPEDITE_FREEZE=0, FIFREEZE waiting for normal RCU grace periods)",
        f"   {'N':>3}  {'freeze ms':>9}  {'round trip ms':>13}  {'freeze/rt':>9}  {'<=1.5':<5}  "
        f"{'CreateSnapshots ms':>18}  {'outside ms':>10}  {'writes held ms':>14}  {'calls':>5}  {'==1':<5}  "
        f"{'writer ms':>9}  {'served ms':>9}  {'beyond ms':>9}  {'normal RCU':>10}",
    ]
    for r in result["make_snapshots"]:
        ok = marks[f"make-snapshots N={r['n']}: freeze / round trip"]
        one = marks[f"make-snapshots N={r['n']}: CreateSnapshots calls while frozen"]
        lines.append(f"   {r['n']:>3}  {r['freeze_ms']:>9.1f}  {r['round_trip_ms']:>13.1f}  {r['ratio']:>9.2f}  {_mark(ok):<5}  "
                     f"{r['api_ms']:>18.1f}  {r['outside_call_ms']:>10.1f}  {r.get('blocked_ms', r['freeze_ms']):>14.1f}  "
                     f"{r['create_snapshots_calls']:>5}  {_mark(one):<5}  {r['writer_stall_ms']:>9.1f}  "
                     f"{r['served_call_ms']:>9.1f}  {r['stall_overhead_ms']:>9.1f}  {r['normal_rcu_stall_overhead_ms']:>10.1f}")
    for t in result["targets"]:
        if "writes held beyond" in t["target"]:
            lines.append(f"   {t['target'].split(':')[0]}: writes held {t['value']:.1f} ms beyond the call "
                         f"(target <= 25): {_mark(t['pass'])}")
    res = result["resolution"]
    lines += [
        "",
        f"3. snapshot resolution: {res['snapshots']} snapshots in the account, {res['matching']} matching "
        "(mount-snapshots --dry-run)",
        f"   DescribeSnapshots pages {res['pages']}, snapshots returned {res['returned']}, "
        f"DescribeSnapshots to next call {res['resolution_ms']:.0f} ms, whole dry run {res['wall_s']:.2f} s",
        f"   filters {', '.join(res['tag_filters']) or 'none'}; OwnerIds=self {'yes' if res['owner_self'] else 'NO'}: "
        f"{_mark(marks['snapshot resolution: server-side tag filters and OwnerIds=self'])}; "
        f"only matching returned: {_mark(marks['snapshot resolution: snapshots returned'])}; "
        f"newest chosen: {_mark(marks['snapshot resolution: newest matching snapshot chosen'])}",
    ]
    if res.get("lab_tag_lookup"):
        lines.append(f"   lab: moto's tag lookup {res['lab_tag_lookup']}")
    if res.get("baseline"):
        b = res["baseline"]
        lines.append(f"   same with only the {b['snapshots']} matching snapshots in the account: "
                     f"{b['resolution_ms']:.0f} ms, dry run {b['wall_s']:.2f} s")
    s = result["startup"]
    lines += [
        "",
        "4. start-up",
        f"   snaptastic --version {s['version_ms']:.0f} ms (target < 150: {_mark(marks['snaptastic --version wall time (ms)'])}; "
        f"heavy imports: {', '.join(s['version_heavy_imports']) or 'none'}), "
        f"--help {s['help_ms']:.0f} ms (heavy imports: {', '.join(s['help_heavy_imports']) or 'none'}), "
        f"bare interpreter {s['bare_interpreter_ms']:.0f} ms",
        f"   mount-snapshots --dry-run: first EC2 call {s['first_ec2_call_ms']:.0f} ms after the process started "
        f"(target <= 350: {_mark(marks['mount-snapshots: first EC2 call after the process started (ms)'])}), "
        f"whole dry run {s['dry_run_ms']:.0f} ms",
    ]
    mem = result["memory"]
    lines += ["", f"5. peak memory of a {mem['n']}-volume restore (agent process, maxrss): {mem['maxrss_kb'] / 1024:.1f} MiB"]
    if result.get("fleet"):
        from bench import fleet

        lines += ["", "6. a fleet booting at once (bench/fleet.py), against the lab's EC2 token buckets",
                  *("   " + line for line in fleet.table(result["fleet"]).splitlines())]
    lines += [
        "",
        f"targets: {sum(t['pass'] for t in result['targets'])} of {len(result['targets'])} pass"
        + (": failing " + "; ".join(f"{t['target']} = {t['value']} ({t['limit']})" for t in result["targets"] if not t["pass"])
           if not all(t["pass"] for t in result["targets"]) else ""),
    ]
    return "\n".join(lines)


def markdown(result: dict[str, Any], text: str) -> str:
    m = result["machine"]
    return "\n".join([
        "## Performance",
        "",
        "Measured by the benchmark in `bench/`: the real CLI against the lab, with a fixed latency added to every EC2 "
        "API call (as root; options: `bench/run --help`, CI runs a small smoke version in `tests/test_bench.py`):",
        "",
        "```sh",
        COMMAND,
        "```",
        "",
        f"Latest run ({result['taken']}), machine: nproc {m['nproc']}, CPU {m['cpu']}, kernel {m['kernel']}, "
        f"Python {m['python']} (`{result['parameters']['python']}`):",
        "",
        "```text",
        text,
        "```",
        "",
    ])


def metrics(result: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of a run, by name, for comparing two runs' JSON."""
    out: dict[str, float] = {}
    for r in result.get("mount_snapshots", []):
        out[f"mount-snapshots N={r['n']} wall s"] = r["wall_s"]
        out[f"mount-snapshots N={r['n']} EC2 calls"] = r["calls"]
    for r in result.get("make_snapshots", []):
        out[f"make-snapshots N={r['n']} freeze ms"] = r["freeze_ms"]
        if "stall_overhead_ms" in r:
            out[f"make-snapshots N={r['n']} writes held beyond call ms"] = r["stall_overhead_ms"]
            out[f"make-snapshots N={r['n']} writes held beyond call, normal RCU, ms"] = r["normal_rcu_stall_overhead_ms"]
        out[f"make-snapshots N={r['n']} freeze / round trip"] = r["ratio"]
    res = result.get("resolution") or {}
    if res:
        out[f"resolution of {res['snapshots']} snapshots ms"] = res["resolution_ms"]
        out["resolution DescribeSnapshots pages"] = res["pages"]
    start = result.get("startup") or {}
    for key, name in (("version_ms", "--version ms"), ("help_ms", "--help ms"), ("first_ec2_call_ms", "first EC2 call ms")):
        if key in start:
            out[name] = start[key]
    mem = result.get("memory") or {}
    if mem:
        out[f"peak RSS of {mem['n']}-volume restore MiB"] = round(mem["maxrss_kb"] / 1024, 1)
    return out


def comparison(before: dict[str, Any], now: dict[str, Any]) -> str:
    old, new = metrics(before), metrics(now)
    lines = [f"compared with the run of {before.get('taken', '?')} (latency {before.get('parameters', {}).get('latency_ms', '?')} ms):",
             f"   {'metric':<44}  {'before':>9}  {'now':>9}  {'change':>7}"]
    for name, value in new.items():
        if name not in old or value is None or old[name] is None:
            continue
        change = f"{(value - old[name]) / old[name] * 100:+.0f}%" if old[name] else ""
        lines.append(f"   {name:<44}  {old[name]:>9g}  {value:>9g}  {change:>7}")
    return "\n".join(lines)
