"""Metrics for node_exporter's textfile collector: the text format as Prometheus parses it, written whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from snaptastic_boot import metrics
from snaptastic_boot.system import textfile

parser = pytest.importorskip("prometheus_client.parser")


def parsed(text: str) -> dict[str, Any]:
    """name -> {frozenset(labels): value}, through Prometheus' own parser."""
    out: dict[str, Any] = {}
    for family in parser.text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation == metrics.METRICS[family.name]
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


class Client:
    total_calls = 7
    throttled = 2


def test_a_successful_run_renders_what_it_observed() -> None:
    obs = metrics.Observation("make-snapshots", "solr")
    obs.ec2.append(Client())
    obs.add("snaptastic_freeze_seconds", 0.0612)
    obs.finish(0, 1_800_000_000.5, 1.25, last_success=None)
    found = parsed(metrics.render(obs.samples))
    labels = frozenset({"command": "make-snapshots", "snapshotter": "solr"}.items())
    assert found["snaptastic_last_run_success"][labels] == 1
    assert found["snaptastic_last_success_timestamp_seconds"][labels] == 1_800_000_000.5
    assert found["snaptastic_run_duration_seconds"][labels] == 1.25
    assert found["snaptastic_ec2_calls"][labels] == 7 and found["snaptastic_ec2_throttled_calls"][labels] == 2
    assert found["snaptastic_freeze_seconds"][labels] == pytest.approx(0.0612)


def test_a_failed_run_keeps_the_last_success_time() -> None:
    before = metrics.Observation("mount-snapshots", "solr")
    before.finish(0, 1000.0, 1.0, last_success=None)
    previous = metrics.render(before.samples)
    failed = metrics.Observation("mount-snapshots", "solr")
    failed.finish(3, 2000.0, 0.5, last_success=metrics.last_success(previous))
    found = parsed(metrics.render(failed.samples))
    labels = frozenset({"command": "mount-snapshots", "snapshotter": "solr"}.items())
    assert found["snaptastic_last_run_success"][labels] == 0
    assert found["snaptastic_last_run_exit_code"][labels] == 3
    assert found["snaptastic_last_success_timestamp_seconds"][labels] == 1000.0
    never = metrics.Observation("mount-snapshots", "solr")
    never.finish(1, 3000.0, 0.5, last_success=None)
    assert "snaptastic_last_success_timestamp_seconds" not in parsed(metrics.render(never.samples))


def test_label_values_are_escaped_and_names_are_known() -> None:
    obs = metrics.Observation("check-backups", 'we"ird\\name\n')
    obs.add("snaptastic_backup_ok", 1, mount_point="/mnt/a b")
    found = parsed(metrics.render(obs.samples))
    (labels,) = found["snaptastic_backup_ok"]
    assert dict(labels) == {"command": "check-backups", "snapshotter": 'we"ird\\name\n', "mount_point": "/mnt/a b"}
    with pytest.raises(KeyError):
        obs.add("snaptastic_unknown", 1)
    assert metrics.file_name("check-backups", "") == "snaptastic_check_backups_all.prom"
    assert metrics.file_name("make-snapshots", "a/b c") == "snaptastic_make_snapshots_a_b_c.prom"


def test_the_file_is_replaced_whole_and_readable_by_the_collector(tmp_path: Path) -> None:
    path = tmp_path / "snaptastic_make_snapshots_solr.prom"
    textfile.write_atomic(path, "first\n")
    textfile.write_atomic(path, "second\n")
    assert path.read_text() == "second\n" and oct(path.stat().st_mode & 0o777) == "0o644"
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left
    assert textfile.read(tmp_path / "missing.prom") == ""


def test_a_check_of_all_and_a_check_of_one_never_write_the_same_series() -> None:
    """node_exporter refuses a series that two files hold: the run's scope tells them apart."""
    seen = []
    for scope in ("all", "solr"):
        obs = metrics.Observation("check-backups", scope)
        obs.add("snaptastic_backup_ok", 1, snapshotter="solr", mount_point="/mnt/a")
        obs.finish(0, 1000.0, 0.1, last_success=None)
        seen += [(name, frozenset(labels.items())) for name, labels, _ in obs.samples]
    assert len(seen) == len(set(seen))
