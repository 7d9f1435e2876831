"""Metrics for node_exporter's textfile collector: what each run observed, and the Prometheus text format.

One home for every metric's name, type and help text, so that the files of different commands and snapshotters
(node_exporter merges them) always agree. Pure: the CLI collects an `Observation` per run and
`system/textfile.py` writes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# name -> help text; every metric is a gauge (a counter would need a value that survives the process).
METRICS: dict[str, str] = {
    "snaptastic_last_run_timestamp_seconds": "When the last run of this command for this snapshotter ended (Unix time).",
    "snaptastic_last_run_success": "1 when the last run of this command for this snapshotter succeeded, else 0.",
    "snaptastic_last_run_exit_code": "Exit code of the last run of this command for this snapshotter.",
    "snaptastic_last_success_timestamp_seconds": "When a run of this command for this snapshotter last succeeded "
                                                 "(Unix time).",
    "snaptastic_run_duration_seconds": "How long the last run of this command for this snapshotter took.",
    "snaptastic_ec2_calls": "EC2 API calls the last run made.",
    "snaptastic_ec2_throttled_calls": "EC2 API answers of the last run that said a token bucket was empty.",
    "snaptastic_freeze_seconds": "Longest time a file system stayed frozen in the last make-snapshots.",
    "snaptastic_writes_held_seconds": "Longest time writes could be held in the last make-snapshots, from the start "
                                      "of the freeze call (the kernel's own flush included) to the thaw.",
    "snaptastic_snapshots_taken": "Snapshots the last make-snapshots took.",
    "snaptastic_backup_age_seconds": "Age of the newest complete snapshot set of a mount point, as check-backups "
                                     "found it.",
    "snaptastic_backup_ok": "1 when check-backups found the mount point's newest complete set fresh enough and "
                            "complete, else 0.",
    "snaptastic_newest_complete_set_age_seconds": "Age of the snapshotter's newest complete snapshot set (its "
                                                  "oldest mount point), as check-backups found it.",
}

Labels = dict[str, str]


@dataclass
class Observation:
    """What one run saw, as samples: (metric name, labels, value)."""

    command: str
    snapshotter: str  # may be set after the samples are added: the labels are put together when read
    added: list[tuple[str, Labels, float]] = field(default_factory=list)
    ec2: list[Any] = field(default_factory=list)  # the EC2 clients it used: their call counts are read at the end

    @property
    def samples(self) -> list[tuple[str, Labels, float]]:
        run = {"command": self.command, "snapshotter": self.snapshotter}
        # A sample about another snapshotter than the run's (check-backups of all) keeps the run's as `scope`:
        # `check-backups` and `check-backups solr` write different files, and node_exporter refuses a series
        # that two files both hold.
        return [(name, {**run, **labels, **({"scope": self.snapshotter} if "snapshotter" in labels else {})}, value)
                for name, labels, value in self.added]

    def add(self, name: str, value: float, **labels: str) -> None:
        if name not in METRICS:
            raise KeyError(f"unknown metric {name}")
        self.added.append((name, labels, float(value)))

    def finish(self, exit_code: int, ended: float, seconds: float, last_success: float | None) -> None:
        """The samples every run has, once its exit code is known (`last_success`: from the previous file)."""
        succeeded = exit_code == 0
        self.add("snaptastic_last_run_timestamp_seconds", ended)
        self.add("snaptastic_last_run_success", 1 if succeeded else 0)
        self.add("snaptastic_last_run_exit_code", exit_code)
        success = ended if succeeded else last_success
        if success is not None:
            self.add("snaptastic_last_success_timestamp_seconds", success)
        self.add("snaptastic_run_duration_seconds", round(seconds, 3))
        if self.ec2:
            self.add("snaptastic_ec2_calls", sum(c.total_calls for c in self.ec2))
            self.add("snaptastic_ec2_throttled_calls", sum(c.throttled for c in self.ec2))


def file_name(command: str, snapshotter: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", snapshotter or "all")
    return f"snaptastic_{command.replace('-', '_')}_{safe}.prom"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample_line(name: str, labels: Mapping[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    number = repr(int(value)) if value == int(value) and abs(value) < 2**53 else repr(value)
    return f"{name}{{{inner}}} {number}" if inner else f"{name} {number}"


def render(samples: Iterable[tuple[str, Labels, float]]) -> str:
    """The Prometheus text format: each metric's HELP and TYPE once, then its samples, in METRICS order."""
    by_name: dict[str, list[tuple[Labels, float]]] = {}
    for name, labels, value in samples:
        by_name.setdefault(name, []).append((labels, value))
    lines: list[str] = []
    for name, help_text in METRICS.items():
        if name in by_name:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines += [_sample_line(name, labels, value) for labels, value in by_name[name]]
    return "\n".join(lines) + "\n" if lines else ""


def last_success(text: str) -> float | None:
    """The last-success time a previous file recorded, to keep it through a failed run."""
    m = re.search(r"^snaptastic_last_success_timestamp_seconds\{[^}]*\} (\S+)$", text, re.M)
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None


# The observation of the run in progress: begun and ended by the CLI, fed by the commands (one per process).
_current: Observation | None = None


def begin(command: str, snapshotter: str) -> Observation:
    global _current
    _current = Observation(command, snapshotter)
    return _current


def end() -> None:
    global _current
    _current = None


def observe(name: str, value: float, **labels: str) -> None:
    if _current is not None:
        _current.add(name, value, **labels)


def observe_ec2(client: Any) -> None:
    if _current is not None and client not in _current.ec2:
        _current.ec2.append(client)
