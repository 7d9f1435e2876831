"""Unit tests decide; they never run a program. Any attempt to do so fails the test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unit test tried to run a command: {args!r}")

    monkeypatch.setattr("snaptastic_boot.system.runner.subprocess.run", refuse)
