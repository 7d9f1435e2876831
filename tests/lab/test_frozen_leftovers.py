"""A file system left frozen by a run killed together with its guard: every command thaws it first."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.lab.agent import configure, ok, volumes


def still_frozen(path: str) -> bool:
    """Whether the file system was still frozen (thawing it, so that a failing test leaves nothing frozen)."""
    return subprocess.run(["fsfreeze", "--unfreeze", path], capture_output=True, check=False).returncode == 0


@pytest.mark.parametrize("command", [["mount-snapshots", "solr"], ["make-snapshots", "solr", "--dry-run"],
                                     ["make-snapshots", "solr"], ["unmount-snapshots", "solr", "--dry-run"]])
def test_a_leftover_freeze_is_thawed_first_with_a_warning(lab: Any, command: list[str]) -> None:
    configure(lab, volumes(lab, 2))
    ok(lab.run("mount-snapshots", "solr"))
    frozen = str(lab.mount_root / "data1")
    subprocess.run(["fsfreeze", "--freeze", frozen], check=True)
    result = lab.run(*command, timeout=60)
    thawed = not still_frozen(frozen)
    assert result.returncode == 0, result.stderr
    assert thawed
    assert f"{frozen} was left frozen by a run that was killed; thawed it" in result.stderr
    assert "data0 was left frozen" not in result.stderr
