"""The real CLI writes metrics for node_exporter's textfile collector: parsed by Prometheus' own parser, with the
values the lab saw, the last success kept through a failure, and nothing at all without the directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.lab.agent import configure, ok, volumes

parser = pytest.importorskip("prometheus_client.parser")


def read(directory: Path, name: str) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    out: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for family in parser.text_string_to_metric_families((directory / name).read_text()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def one(found: dict[str, Any], name: str) -> float:
    (value,) = found[name].values()
    return float(value)


def test_commands_write_what_they_did(lab: Any, tmp_path: Path) -> None:
    directory = tmp_path / "node-exporter"
    directory.mkdir()
    configure(lab, volumes(lab, 2))
    env = {**lab.env, "SNAPTASTIC_METRICS_DIR": str(directory)}
    ok(lab.run("mount-snapshots", "solr", env=env))
    restored = read(directory, "snaptastic_mount_snapshots_solr.prom")
    assert one(restored, "snaptastic_last_run_success") == 1 and one(restored, "snaptastic_ec2_calls") > 0

    lab.reset_calls()
    ok(lab.run("make-snapshots", "solr", env=env))
    made = read(directory, "snaptastic_make_snapshots_solr.prom")
    labels = frozenset({"command": "make-snapshots", "snapshotter": "solr"}.items())
    assert made["snaptastic_last_run_success"][labels] == 1
    assert made["snaptastic_ec2_calls"][labels] == len(lab.calls)  # what EC2 saw
    assert made["snaptastic_snapshots_taken"][labels] == 2
    assert 0 < made["snaptastic_freeze_seconds"][labels] <= made["snaptastic_writes_held_seconds"][labels] < 30
    succeeded_at = made["snaptastic_last_success_timestamp_seconds"][labels]

    ok(lab.run("unmount-snapshots", "solr", "--yes", env=env))
    failed = lab.run("make-snapshots", "solr", env=env)  # nothing mounted: nothing to snapshot
    assert failed.returncode != 0
    after = read(directory, "snaptastic_make_snapshots_solr.prom")
    assert after["snaptastic_last_run_success"][labels] == 0
    assert after["snaptastic_last_run_exit_code"][labels] == failed.returncode
    assert after["snaptastic_last_success_timestamp_seconds"][labels] == succeeded_at
    assert after["snaptastic_last_run_timestamp_seconds"][labels] > succeeded_at

    checked = lab.run("check-backups", "solr", env=env)
    backups = read(directory, "snaptastic_check_backups_solr.prom")
    assert one(backups, "snaptastic_last_run_exit_code") == checked.returncode
    assert set(backups) >= {"snaptastic_last_run_success", "snaptastic_ec2_calls"}
    assert sorted(p.name for p in directory.iterdir()) == [
        "snaptastic_check_backups_solr.prom", "snaptastic_make_snapshots_solr.prom",
        "snaptastic_mount_snapshots_solr.prom", "snaptastic_unmount_snapshots_solr.prom"]


def test_check_backups_reports_each_mount_point_and_the_sets_age(lab: Any, tmp_path: Path) -> None:
    directory = tmp_path / "node-exporter"
    directory.mkdir()
    configure(lab, volumes(lab, 2))
    env = {**lab.env, "SNAPTASTIC_METRICS_DIR": str(directory)}
    ok(lab.run("mount-snapshots", "solr"))
    ok(lab.run("make-snapshots", "solr", "--wait"))
    ok(lab.run("check-backups", "solr", "--age", "1h", env=env))
    found = read(directory, "snaptastic_check_backups_solr.prom")
    mount_points = {dict(labels)["mount_point"] for labels in found["snaptastic_backup_ok"]}
    assert mount_points == {str(lab.mount_root / "data0"), str(lab.mount_root / "data1")}
    assert set(found["snaptastic_backup_ok"].values()) == {1}
    assert 0 <= one(found, "snaptastic_newest_complete_set_age_seconds") < 3600


def test_no_directory_no_file_and_no_complaint(lab: Any, tmp_path: Path) -> None:
    missing = tmp_path / "no-node-exporter"
    configure(lab, volumes(lab, 1))
    result = ok(lab.run("mount-snapshots", "solr", env={**lab.env, "SNAPTASTIC_METRICS_DIR": str(missing)}))
    assert not missing.exists() and "metrics" not in result.stderr
    dry = tmp_path / "dry"
    dry.mkdir()
    ok(lab.run("make-snapshots", "solr", "--dry-run", env={**lab.env, "SNAPTASTIC_METRICS_DIR": str(dry)}))
    assert list(dry.iterdir()) == []  # a dry run changed nothing, and records nothing
