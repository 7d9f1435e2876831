"""Stop a long run at a safe point: SIGTERM, SIGINT and SIGHUP set a flag that the run checks between steps.

Killing mount-snapshots in the middle of mkfs or mount would be survivable (a rerun converges), but stopping
between steps leaves nothing half-done and says what is left.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from snaptastic_boot import messages
from snaptastic_boot.errors import Stopped

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class GracefulStop:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def check(self, done: str) -> None:
        if self.signum is not None:
            name = signal.Signals(self.signum).name
            raise Stopped(messages.stopped(name, done))


class NoStop(GracefulStop):
    """For callers that do not want signal handling (tests, library use)."""

    def __enter__(self) -> GracefulStop:
        return self
