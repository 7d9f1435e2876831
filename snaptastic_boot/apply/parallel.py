"""Run one function over many items at once (EC2 calls, device preparation), failing with the first error."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 16


def run_all(fn: Callable[[T], R], items: Sequence[T], workers: int = MAX_WORKERS) -> list[R]:
    """`fn` of every item, in order. Every item is tried even when one fails; then the first error is raised."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(fn, i) for i in items]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]
    return [f.result() for f in futures]
