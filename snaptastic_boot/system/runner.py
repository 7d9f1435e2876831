"""The one way the agent runs system commands: argument lists only, accepted exit codes, a timeout.

User values never reach a shell. Everything that runs a program goes through `run`, so tests can see or
forbid it in one place.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from snaptastic_boot import messages
from snaptastic_boot.errors import CommandError, ToolMissing

log = logging.getLogger("snaptastic.runner")

DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    ok_codes: Sequence[int] = (0,),
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
) -> Result:
    args = [str(a) for a in argv]
    if shutil.which(args[0]) is None:
        raise ToolMissing(messages.tool_missing(args[0]))
    started = time.monotonic()
    try:
        proc = subprocess.run(
            args,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandError(args, None, out, err, reason=f"timed out after {timeout:.0f}s") from exc
    log.debug("ran %s -> %s in %.0f ms", args, proc.returncode, (time.monotonic() - started) * 1000)
    if proc.returncode not in ok_codes:
        raise CommandError(args, proc.returncode, proc.stdout, proc.stderr)
    return Result(args, proc.returncode, proc.stdout, proc.stderr)


def spawn(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start a helper process in its own session (it must outlive us if we are killed); no output kept."""
    return subprocess.Popen(
        [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
    )

