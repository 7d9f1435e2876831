"""Fixtures of the boot tests: the built .deb, the cached root image, instances booted against a lab.

Where these tests cannot run (not root, systemd-nspawn or mmdebstrap missing) they skip and say why; under
CI (CI set in the environment) a missing tool is a failure, as in tests/test_packaging.py. Anything that
goes wrong once the tools are there (mmdebstrap cannot reach the mirror, the container does not boot) is a
failure, never a skip.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from snaptastic_lab.namespace import in_private_namespace
from tests.boot.image import Cache, Image, Images, VmImage
from tests.boot.machine import Instance, nspawn_problem
from tests.boot.machine_vm import VmInstance, vm_problem

ROOT = Path(__file__).resolve().parents[2]
_timings: list[str] = []
BOOT_TEST_TIMEOUT = 1500


def _require_boot() -> None:
    problem = nspawn_problem()
    if problem is None and not in_private_namespace():
        problem = "boot tests need the lab's private mount namespace (see snaptastic_lab/pytest_plugin.py)"
    if problem:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail(f"CI must be able to run the boot tests: {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_boot()
    out = tmp_path_factory.mktemp("boot-deb")
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(ROOT / "packaging/deb/build"), str(out)], capture_output=True, text=True, env=env,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    debs = list(out.glob("snaptastic-boot_*_all.deb"))
    assert len(debs) == 1, debs
    _timings.append(f"package built in {time.monotonic() - started:.1f}s")
    return debs[0]


@pytest.fixture(scope="session")
def images(deb: Path) -> Iterator[Images]:
    cache = Cache()
    try:
        layers = cache.prepare(deb)
        built = ", ".join(cache.built) or "nothing, all layers cached"
        _timings.append(f"images ready in {cache.seconds:.1f}s (built: {built})")
        yield layers
    finally:
        cache.close()


@pytest.fixture(scope="session")
def image(images: Images) -> Image:
    return images.container


@pytest.fixture(scope="session")
def vm_image(images: Images) -> VmImage:
    problem = vm_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to run the VM boot tests: {problem}")
        pytest.skip(problem)
    return images.vm


def _made(make_one: Callable[[Path, Any, str], Any], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(lab: Any, name: str) -> Any:
        instance = make_one(tmp_path / name, lab, name)
        made.append(instance)
        return instance

    yield make
    for instance in reversed(made):
        instance.close()


@pytest.fixture
def instances(image: Image, tmp_path: Path) -> Iterator[Callable[..., Instance]]:
    """Make instances booted from the image against a lab; all are powered off and unmounted at teardown."""
    yield from _made(lambda path, lab, name: Instance(image, path, lab, f"snaptastic-{name}-{os.getpid()}"), tmp_path)


@pytest.fixture
def vm_instances(vm_image: VmImage, tmp_path: Path) -> Iterator[Callable[..., VmInstance]]:
    """As `instances`, but each instance is a qemu VM (machine_vm.py)."""
    yield from _made(lambda path, lab, name: VmInstance(vm_image, path, lab, f"snaptastic-vm-{name}-{os.getpid()}"), tmp_path)


@pytest.fixture(params=["container", pytest.param("vm", marks=pytest.mark.vm)])
def machines(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """`instances` or `vm_instances`: a test taking this runs once in containers and once in VMs."""
    return request.getfixturevalue("instances" if request.param == "container" else "vm_instances")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A boot test may build the images first (two mmdebstrap runs on a fresh machine) and a VM boots under
    emulation: more time than the suite's default per test."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(BOOT_TEST_TIMEOUT))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _timings:
        terminalreporter.write_sep("-", "boot tests")
        for line in _timings:
            terminalreporter.write_line(line)
