"""Small helpers for driving the real agent against a lab."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

DEVICES = [f"/dev/sd{c}" for c in "fghijklmnopqrstu"]


def volumes(lab: Any, n: int, size: int = 1, **extra: Any) -> list[dict[str, Any]]:
    return [{"device": DEVICES[i], "mount_point": str(lab.mount_root / f"data{i}"), "size": size, **extra} for i in range(n)]


def configure(lab: Any, vols: list[dict[str, Any]], name: str = "solr", **entry: Any) -> dict[str, str]:
    """Write a JSON config for one snapshotter into the lab and return the agent's environment for it."""
    path = Path(lab.workdir) / "snaptastic.json"
    path.write_text(json.dumps({"snapshotters": {name: {"volumes": vols, **entry}}}))
    lab.env["SNAPTASTIC_CONFIG"] = str(path)
    return lab.env


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def run_json(lab: Any, *args: str) -> Any:
    return json.loads(ok(lab.run(*args, "--json")).stdout)


def our_volumes(lab: Any, mount_point: str | None = None) -> list[dict[str, Any]]:
    filters = [{"Name": "tag-key", "Values": ["mount_point"]}]
    if mount_point:
        filters = [{"Name": "tag:mount_point", "Values": [mount_point]}]
    vols = lab.ec2.describe_volumes(Filters=filters)["Volumes"]
    return [v for v in vols if v["State"] not in ("deleting", "deleted")]


def is_mounted(path: str | Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0


def managed_lines(lab: Any) -> list[str]:
    lines = Path(lab.fstab).read_text().splitlines()
    return [lines[i + 1] for i, line in enumerate(lines) if line.startswith("# snaptastic-boot:")]


def wait_for_call(lab: Any, action: str, timeout: float = 30.0) -> None:
    """Until the lab has seen `action` (a call the agent is making), failing the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while action not in [a for _, a in lab.calls]:
        if time.monotonic() > deadline:
            raise AssertionError(f"the lab saw no {action} within {timeout:.0f}s")
        time.sleep(0.05)
