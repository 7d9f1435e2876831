"""Freeze filesystems for as short a time as possible, and never leave one frozen.

Thaw is guaranteed four ways: the `finally` of the context manager; SIGTERM/SIGINT/SIGHUP handlers that thaw
before the process goes; a watchdog thread that thaws when the freeze outlives its bound even if the API call
in the middle hangs; and a guard process, started before the first freeze, that thaws at once if this process
dies (even by SIGKILL) and at the bound in any case.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Callable

from snaptastic_boot.errors import SnaptasticError
from snaptastic_boot.system import kernel, runner

log = logging.getLogger("snaptastic.freeze")

@dataclass
class FreezeWindow:
    freeze_started: dict[str, float] = field(default_factory=dict)
    frozen_at: dict[str, float] = field(default_factory=dict)
    thawed_at: dict[str, float] = field(default_factory=dict)
    watchdog_fired: bool = False
    thaw: Callable[[], None] = lambda: None  # thaw every file system now (see `frozen`)

    @property
    def max_ms(self) -> float:
        """The longest time a filesystem stayed frozen: from its freeze's completion to its thaw."""
        spans = [(self.thawed_at.get(mp, time.monotonic()) - t) * 1000 for mp, t in self.frozen_at.items()]
        return max(spans, default=0.0)

    @property
    def blocked_ms(self) -> float:
        """Writers may wait from the start of the freeze call (the kernel flushes what is dirty first)."""
        spans = [(self.thawed_at.get(mp, time.monotonic()) - t) * 1000 for mp, t in self.freeze_started.items()]
        return max(spans, default=0.0)


class _Thawer:
    def __init__(self, thaw: Callable[[str], object], window: FreezeWindow) -> None:
        self._thaw = thaw
        self.window = window
        self.lock = threading.Lock()

    def thaw_all(self, reason: str) -> None:
        with self.lock:
            for mp in list(self.window.frozen_at):
                if mp in self.window.thawed_at:
                    continue
                try:
                    self._thaw(mp)
                except SnaptasticError as exc:
                    log.error("could not thaw %s (%s): %s", mp, reason, exc)
                    continue
                self.window.thawed_at[mp] = time.monotonic()
                log.debug("thawed %s (%s)", mp, reason)


@contextmanager
def frozen(
    mount_points: Sequence[str],
    freeze: Callable[[str], None],
    thaw: Callable[[str], object],
    max_seconds: float,
    flush: Callable[[str], None] = lambda _: None,
    expedite: bool = False,
) -> Iterator[FreezeWindow]:
    """Frozen inside, thawed on the way out. `window.thaw()` thaws earlier: a caller whose API call has been
    accepted has no more need of the freeze, and need not keep writers waiting while it reads the answer.
    `expedite`: expedited RCU grace periods for the freeze (see system/kernel.py)."""
    window = FreezeWindow()
    thawer = _Thawer(thaw, window)
    window.thaw = lambda: thawer.thaw_all("answered")
    stop = threading.Event()

    def watchdog() -> None:
        if not stop.wait(max_seconds):
            window.watchdog_fired = True
            log.error("filesystems frozen for more than %.0fs; thawing now (the snapshot may only be crash-consistent)", max_seconds)
            thawer.thaw_all("watchdog")

    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        thawer.thaw_all(f"signal {signum}")
        handler = previous.get(signum)
        if callable(handler):
            handler(signum, frame)
        raise SystemExit(128 + signum)

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous[sig] = signal.signal(sig, on_signal)
    dog = threading.Thread(target=watchdog, name="thaw-watchdog", daemon=True)
    expedited = bool(mount_points) and expedite and kernel.expedite_grace_periods()
    guard = _start_guard(mount_points, max_seconds, expedited) if mount_points else None  # --no-freeze: nothing to guard
    try:
        dog.start()
        _freeze_all(mount_points, flush, freeze, window, thawer.lock)
        yield window
    finally:
        stop.set()
        thawer.thaw_all("done")
        if expedited:
            kernel.normal_grace_periods()
        if guard is not None:
            guard.kill()
            guard.wait()
        if in_main:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("freeze window %.0f ms for %d filesystem(s) (writes held up to %.0f ms, flush included)",
                 window.max_ms, len(window.frozen_at), window.blocked_ms)


def thaw_leftovers(mount_points: Sequence[str], mounted: Sequence[str], thaw: Callable[[str], object]) -> list[str]:
    """Thaw what a killed run (agent and guard both gone) left frozen, before anything else touches it; the
    mount points that were frozen. Called under the run lock, so it never undoes another run's freeze."""
    thawed = [mp for mp in mount_points if mp in mounted and thaw(mp)]
    for mp in thawed:
        log.warning("%s was left frozen by a run that was killed; thawed it", mp)
    return thawed


def _freeze_all(mount_points: Sequence[str], flush: Callable[[str], None], freeze: Callable[[str], None],
                window: FreezeWindow, lock: threading.Lock) -> None:
    """Flush every filesystem at once, then, when all are flushed, freeze them all at once, one thread each.
    One after another, the first would stay frozen while the others flush; a fresh flush leaves each
    freeze little to write, so they all finish close together. Every freeze finishes (or fails) before this
    returns, so the caller's thaw sees them all."""
    flushed = threading.Barrier(len(mount_points))

    def one(mp: str) -> None:
        try:
            flush(mp)
        finally:
            flushed.wait()
        started = time.monotonic()
        freeze(mp)
        with lock:  # only the bookkeeping: a thaw on a signal must never wait for a freeze in the kernel
            window.freeze_started[mp] = started
            window.frozen_at[mp] = time.monotonic()

    if not mount_points:
        return
    with ThreadPoolExecutor(max_workers=len(mount_points), thread_name_prefix="freeze") as pool:
        futures = [pool.submit(one, mp) for mp in mount_points]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]


def _start_guard(mount_points: Sequence[str], max_seconds: float, expedited: bool = False) -> Any:
    argv = [sys.executable, "-m", "snaptastic_boot.apply.freeze", str(os.getpid()), str(max_seconds),
            "expedited" if expedited else "normal", *mount_points]
    try:
        return runner.spawn(argv)
    except OSError as exc:
        log.warning("could not start the thaw guard process (%s); relying on the in-process watchdog", exc)
        return None


def _guard(parent: int, max_seconds: float, expedited: bool, mount_points: Sequence[str]) -> None:
    """Wait while the parent lives and the bound is not reached; then thaw (thawing twice is harmless), and
    turn expedited grace periods off again if the parent turned them on."""
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.05)
    for mp in mount_points:
        # Through fsfreeze(8): a second, independent way to thaw, next to the in-process ioctl.
        try:
            runner.run(["fsfreeze", "--unfreeze", mp], ok_codes=(0, 1), timeout=30)
        except SnaptasticError:
            pass
    if expedited and os.getppid() != parent:
        kernel.normal_grace_periods()


if __name__ == "__main__":
    _guard(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "expedited", sys.argv[4:])
