"""Unit tests decide; they never run a program. Any attempt to do so fails the test."""

from __future__ import annotations

import os
import subprocess

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
