"""Expedited RCU grace periods while frozen, and normal ones again afterwards, also when the agent is killed
during the freeze (its guard turns them back); none with SNAPTASTIC_EXPEDITE_FREEZE=0.

The setting is the machine's: the lab's agents leave it alone (the lab sets SNAPTASTIC_EXPEDITE_FREEZE=0), and
the only other runs that change it, the benchmark's, take the same machine-wide lock."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.agent import configure, ok, volumes, wait_for_call
from tests.lab.test_snapshots import write_probe
from tests.machine import exclusive

SETTING = Path("/sys/kernel/rcu_expedited")


def setting() -> str:
    return SETTING.read_text().strip()


def until_normal(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while setting() != "0":
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_expedited_only_while_frozen_even_when_killed(lab: Any) -> None:
    with exclusive("rcu-expedited"):
        expedited_only_while_frozen(lab)


def expedited_only_while_frozen(lab: Any) -> None:
    try:
        if setting() != "0":
            pytest.skip("expedited RCU grace periods are already on here")
        SETTING.write_text("0")
    except OSError as exc:
        pytest.skip(f"{SETTING} cannot be changed here: {exc}")
    configure(lab, volumes(lab, 2))
    ok(lab.run("mount-snapshots", "solr"))
    env = {**lab.env, "SNAPTASTIC_EXPEDITE_FREEZE": "1"}
    lab.faults.hang_actions = {"CreateSnapshots": 2.0}
    run = subprocess.Popen(["snaptastic", "make-snapshots", "solr"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    wait_for_call(lab, "CreateSnapshots")
    assert setting() == "1"  # frozen, the call in flight
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert setting() == "0" and "frozen for" in out

    lab.faults.hang_actions = {"CreateSnapshots": 20.0}
    lab.reset_calls()
    killed = subprocess.Popen(["snaptastic", "make-snapshots", "solr"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_for_call(lab, "CreateSnapshots")
    assert setting() == "1"
    killed.kill()
    killed.wait()
    assert write_probe(lab.mount_root / "data0" / "after-kill", 5) is not None
    assert until_normal(5)  # the guard turned them back, as it thawed
    ok(lab.run("make-snapshots", "solr"))  # SNAPTASTIC_EXPEDITE_FREEZE=0: untouched
    assert setting() == "0"
