"""The benchmark keeps working: a small run of `python -m bench` whose JSON has every section with sane values.

Only structural properties are asserted (call budget, one CreateSnapshots call, filters, counts); timings are
checked to exist and be positive, never against targets, so a slow CI machine does not fail this test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.machine import exclusive

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1, 2)
SNAPSHOTS, MATCHING = 200, 5


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if os.geteuid() != 0:
        pytest.skip("the benchmark needs root: loop devices and mounts")
    out = tmp_path_factory.mktemp("bench")
    path = out / "bench.json"
    markdown = out / "PERFORMANCE.md"
    # Its make-snapshots runs change the machine's RCU setting, which tests/lab/test_expedited_freeze.py checks.
    with exclusive("rcu-expedited"):
        done = _run_bench(out, path, markdown)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    data = json.loads(path.read_text())
    data["_stdout"] = done.stdout
    data["_markdown"] = markdown.read_text()
    return data


def _run_bench(out: Path, path: Path, markdown: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", ",".join(map(str, SIZES)), "--snapshots", str(SNAPSHOTS),
         "--matching", str(MATCHING), "--repetitions", "1", "--latency-ms", "5", "--workdir", str(out / "labs"),
         "--fleet", "3,1,1",
         "--json", str(path), "--markdown", str(markdown)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )


def test_parameters_and_machine_are_recorded(result: dict) -> None:
    p = result["parameters"]
    assert p["latency_ms"] == 5 and p["repetitions"] == 1 and p["sizes"] == list(SIZES)
    assert p["device_style"] in ("nvme", "xen") and Path(p["python"]).exists() and p["agent"]
    m = result["machine"]
    assert m["nproc"] >= 1 and m["kernel"] and m["python"].split()[0] in ("CPython", "PyPy")
    for section in ("mount_snapshots", "make_snapshots", "resolution", "startup", "memory", "targets"):
        assert section in result


def test_mount_snapshots_restores_within_the_call_budget(result: dict) -> None:
    rows = result["mount_snapshots"]
    assert [r["n"] for r in rows] == list(SIZES)
    for r in rows:
        assert r["wall_s"] > 0 and r["ratio"] > 0
        assert r["restored_from_snapshot"] == r["n"] and r["data_intact"]
        assert r["calls"] == sum(r["calls_by_action"].values())
        assert r["calls"] <= 2 * r["n"] + 6 == r["call_budget"]
        assert r["calls_by_action"]["CreateVolume"] == r["n"] and r["calls_by_action"]["AttachVolume"] == r["n"]
        assert r["calls_by_action"]["DescribeSnapshots"] == 1


def test_make_snapshots_freezes_around_one_create_snapshots_call(result: dict) -> None:
    rows = result["make_snapshots"]
    assert [r["n"] for r in rows] == list(SIZES)
    for r in rows:
        assert r["create_snapshots_calls"] == 1 and r["create_snapshot_calls"] == 0 and not r["fallback"]
        assert r["snapshots"] == r["n"]
        assert r["freeze_ms"] > 0 and r["round_trip_ms"] > 0 and r["ratio"] > 0
        # The application beside it was held while EC2 served the call: the freeze covers the call.
        assert r["served_call_ms"] > 0 and r["writer_stall_ms"] >= 0.5 * r["served_call_ms"]


def test_resolution_uses_server_side_filters(result: dict) -> None:
    res = result["resolution"]
    assert res["snapshots"] == SNAPSHOTS and res["matching"] == MATCHING
    assert res["pages"] >= 1 and res["returned"] == MATCHING
    assert res["owner_self"] and "tag:mount_point" in res["tag_filters"]
    assert res["chose_newest"]
    assert res["baseline"]["snapshots"] == MATCHING


def test_startup_and_memory(result: dict) -> None:
    s = result["startup"]
    assert s["version_ms"] > 0 and s["help_ms"] > 0 and s["first_ec2_call_ms"] > 0
    assert "boto3" not in s["version_heavy_imports"]
    mem = result["memory"]
    assert mem["n"] == max(SIZES) and 10 * 1024 < mem["maxrss_kb"] < 2 * 1024 * 1024


def test_table_and_markdown(result: dict) -> None:
    assert all({"target", "value", "limit", "pass"} <= set(t) for t in result["targets"])
    for marker in ("1. mount-snapshots", "2. make-snapshots", "3. snapshot resolution", "4. start-up", "5. peak memory"):
        assert marker in result["_stdout"]
    assert result["_markdown"].startswith("## Performance") and "nproc" in result["_markdown"]
    assert "bench/run" in result["_markdown"]


def test_two_runs_compare(result: dict) -> None:
    from bench import report

    text = report.comparison(result, result)
    assert f"mount-snapshots N={max(SIZES)} wall s" in text and "first EC2 call ms" in text
    assert all(line.rstrip().endswith(("+0%", "-0%")) for line in text.splitlines()[2:] if line.strip())


def test_a_small_boot_storm_of_a_fleet_in_the_same_run(result: dict) -> None:
    """--fleet: every instance restores and snapshots under EC2's token buckets, with nothing duplicated or
    leaked; the wall time and its lower bound are reported (never judged here), in the same table."""
    fleet = result["fleet"]
    for phase in ("mount_snapshots", "make_snapshots"):
        assert fleet[phase]["succeeded"] == fleet[phase]["runs"] == 3, fleet[phase]["failures"]
        assert fleet[phase]["wall_s"] > 0 and fleet[phase]["lower_bound_s"] >= 0
    assert (fleet["mount_snapshots"]["duplicates"], fleet["mount_snapshots"]["leaked"],
            fleet["mount_snapshots"]["missing"]) == (0, 0, 0)
    assert "6. a fleet booting at once" in result["_stdout"] and "lower bound" in result["_markdown"]
    assert {t["target"] for t in result["targets"]} >= {"fleet mount-snapshots: runs succeeded",
                                                        "fleet make-snapshots: wall / token-bucket lower bound"}
