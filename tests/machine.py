"""Settings of this machine that some tests change: one test at a time, across the suite's worker processes."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(what: str) -> Iterator[None]:
    """Hold the machine-wide lock for `what` (an flock on a file in /tmp) while the block runs."""
    with open(Path("/tmp") / f"snaptastic-tests-{what}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
