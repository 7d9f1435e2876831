"""Running the agent's real CLI as a child process: wall time, exit status, output and peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def default_python() -> str:
    """The project's .venv interpreter when there is one, else the one running the benchmark."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def agent_argv(python: str) -> list[str]:
    """The `snaptastic` console script installed beside `python`, else `python -m snaptastic_boot`."""
    script = Path(python).parent / "snaptastic"
    if script.exists():
        first = script.read_text(errors="replace").splitlines()[:1]
        shebang = first[0][2:].strip() if first and first[0].startswith("#!") else ""
        if shebang and Path(shebang).resolve() == Path(python).resolve():
            return [str(script)]
    return [python, "-m", "snaptastic_boot"]


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    started: float  # time.time() just before the child was started, comparable with the lab's call stamps
    wall_s: float
    maxrss_kb: int  # the child's peak resident set size (and that of the tools it waited for)

    def check(self) -> Run:
        if self.returncode != 0:
            raise RuntimeError(f"snaptastic {' '.join(self.args)} exited {self.returncode}\n"
                               f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}")
        return self

    def json(self) -> Any:
        return json.loads(self.check().stdout)


TIME = "/usr/bin/time"


def run(argv: list[str], args: list[str], env: dict[str, str], timeout: float = 600, rss: bool = True) -> Run:
    """Start the agent through /usr/bin/time, which reports the agent's own peak RSS.

    A child forked straight from this process would report this process's RSS (the lab and moto, hundreds of
    MB) as its peak: Linux keeps the larger of the old and new high-water marks across exec. /usr/bin/time is
    small, so the agent it forks starts from a small high-water mark. `rss=False` starts the agent directly
    (start-up timings, where the wrapper's own millisecond would count).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as peak:
        wrapper = [TIME, "-q", "-f", "%M", "-o", peak.name] if rss and os.path.exists(TIME) else []
        started = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen([*wrapper, *argv, *args], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text = peak.read().strip().splitlines()
        maxrss = int(text[-1]) if text and text[-1].isdigit() else 0
        return Run(args, proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                   started, wall, maxrss)
