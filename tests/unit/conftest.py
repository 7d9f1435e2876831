"""Unit tests decide; they never run a program. Any attempt to do so fails the test."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unit test tried to run a command: {args!r}")

    # subprocess.run for the commands `runner.run` makes, Popen for the processes `runner.spawn` starts (the
    # thaw guard) and anything else that would start one.
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "system", refuse)


@pytest.fixture(autouse=True)
def no_kernel_settings(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The freeze expedites RCU grace periods through /sys: a file of the test's own instead (as root, the
    real one would change for the whole machine)."""
    from snaptastic_boot.system import kernel

    setting = tmp_path_factory.mktemp("sys") / "rcu_expedited"
    setting.write_text("0")
    monkeypatch.setattr(kernel, "RCU_EXPEDITED", setting)


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """cli.main points the root logger at the sys.stderr of its moment (a test's capture, closed after the test):
    later tests would log into a closed stream."""
    root, ours = logging.getLogger(), logging.getLogger("snaptastic")
    handlers, root_level, our_level = root.handlers[:], root.level, ours.level
    yield
    root.handlers[:] = handlers
    root.setLevel(root_level)
    ours.setLevel(our_level)
