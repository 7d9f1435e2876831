"""Batched, bounded waiting: one poller for all resources of a run, with backoff and progress logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from snaptastic_boot import messages
from snaptastic_boot.errors import OperationFailed, WaitTimeout
from snaptastic_boot.model import GONE_STATES

log = logging.getLogger("snaptastic.waits")

T = TypeVar("T")

# Polls come quickly at first (most EC2 state changes take a second or two), then back off.
SLEEPS: tuple[float, ...] = (0.25, 0.5, 1.0, 1.0, 2.0, 2.0, 3.0, 5.0)
PROGRESS_EVERY = 10.0


def volume_gone(volume: dict[str, Any]) -> str | None:
    """Why waiting for this volume is pointless, if it is."""
    return f"is {volume['State']}" if volume.get("State") in GONE_STATES else None


def snapshot_failed(snapshot: dict[str, Any]) -> str | None:
    return "failed" if snapshot.get("State") == "error" else None


def bound(default: float, override: float | None) -> float:
    """A wait's limit: its default, unless SNAPTASTIC_WAIT_TIMEOUT (`Tunables.wait_timeout`) overrides every wait."""
    return default if override is None else override


def until(
    what: str,
    keys: Iterable[str],
    fetch: Callable[[Sequence[str]], dict[str, T]],
    done: Callable[[T], bool],
    *,
    failed: Callable[[T], str | None] = lambda _: None,
    label: Callable[[str], str] = str,
    limit: float,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, T]:
    """Poll `fetch(remaining keys)` until `done` holds for every key; one fetch covers all keys."""
    remaining = list(dict.fromkeys(keys))
    results: dict[str, T] = {}
    started = time.monotonic()
    last_progress = started
    attempt = 0
    while remaining:
        states = fetch(remaining)
        for key in list(remaining):
            state = states.get(key)
            if state is None:
                continue
            reason = failed(state)
            if reason:
                raise OperationFailed(messages.wait_failed(what, label(key), reason))
            if done(state):
                results[key] = state
                remaining.remove(key)
        if not remaining:
            break
        now = time.monotonic()
        if now - started > limit:
            raise WaitTimeout(messages.wait_gave_up(what, limit, [label(k) for k in remaining]))
        if now - last_progress >= PROGRESS_EVERY:
            log.info("%s: still waiting for %s (%.0fs)", what, ", ".join(map(label, remaining)), now - started)
            last_progress = now
        sleep(SLEEPS[min(attempt, len(SLEEPS) - 1)])
        attempt += 1
    waited = time.monotonic() - started
    if waited >= 0.5:
        log.info("%s: done after %.1fs", what, waited)
    return results
