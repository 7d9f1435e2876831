"""pytest plugin: a private mount namespace for the whole run, and the `lab` fixtures.

Lab tests need root (loop devices, mknod, mount); without it their fixtures skip with the reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from snaptastic_lab.namespace import enter_private_namespace, in_private_namespace

NEED_ROOT = "lab tests need root: loop devices and mounts"
_namespace_problem: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _namespace_problem
    if os.geteuid() != 0 or in_private_namespace() or not _may_need_labs(config):
        # xdist workers are children of the run that entered the namespace, and share it.
        return
    # Before any thread exists: the lab's servers run in threads, and they must live in the namespace too.
    try:
        enter_private_namespace()
    except (OSError, subprocess.CalledProcessError) as exc:
        # Without a private namespace (or with one whose mounts still propagate) lab mounts could reach the host.
        _namespace_problem = f"lab tests need a private mount namespace: {exc}"


def _may_need_labs(config: pytest.Config) -> bool:
    """False only when every path the run was given lies under tests/unit, which never starts a lab."""
    unit = (Path(str(config.rootpath)) / "tests" / "unit").resolve()
    paths = [Path(a.split("::")[0]) for a in config.args] or [Path(str(config.rootpath))]
    return not all((Path(config.invocation_params.dir) / p).resolve().is_relative_to(unit) for p in paths)


def _usable() -> None:
    if os.geteuid() != 0:
        pytest.skip(NEED_ROOT)
    if _namespace_problem:
        pytest.skip(_namespace_problem)
    if not in_private_namespace():
        pytest.skip("lab tests need a private mount namespace; run them by their own path, not from tests/unit")


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start labs with any options: `lab_factory(device_style="xen", userdata=...)`; all stop at teardown."""
    _usable()
    from snaptastic_lab import Lab

    started: list[Lab] = []

    def make(**options: Any) -> Lab:
        workdir = options.pop("workdir", None) or tmp_path / f"lab{len(started)}"
        lab = Lab(Path(workdir), **options)
        started.append(lab)
        return lab.start()

    yield make
    for lab in reversed(started):
        lab.stop()


@pytest.fixture
def lab(lab_factory: Callable[..., Any]) -> Any:
    """A started lab: Nitro (nvme) devices, the default solr userdata."""
    return lab_factory(device_style="nvme")


@pytest.fixture(params=["xen", "nvme"])
def device_style(request: pytest.FixtureRequest) -> str:
    return str(request.param)
