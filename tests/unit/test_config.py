from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snaptastic_boot.config import settings as settings_mod
from snaptastic_boot.errors import BadInput
from snaptastic_boot.model import VolumeSpec, volume_problems

USERDATA = {"role": "solr", "cluster": "solr-prod", "environment": "production"}
META = {"instance-id": "i-1", "availability-zone": "us-east-1a"}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No settings from this machine: only what a test writes."""
    monkeypatch.setattr(settings_mod, "SETTINGS_FILES", (tmp_path / "none.py",))
    sys.modules.pop("snaptastic_settings", None)


def load(path: str | None = None) -> settings_mod.Settings:
    """As the commands load: an explicit --config path, else a default path that does not exist here."""
    if path is not None:
        return settings_mod.load(Path(path), explicit=True)
    return settings_mod.load(Path("/nonexistent/snaptastic.json"), explicit=False)


def write_config(tmp_path: Path, data: object) -> str:
    path = tmp_path / "snaptastic.json"
    path.write_text(json.dumps(data))
    return str(path)


def solr_volume(**over: object) -> dict[str, object]:
    return {"device": "/dev/sdf", "mount_point": "/mnt/solr", "size": 20, **over}


def test_seed_settings_module_on_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "snaptastic_settings.py").write_text(textwrap.dedent("""
        REGION = 'eu-west-1'
        from snaptastic_boot import Snapshotter, EBSVolume

        class SolrSnapshotter(Snapshotter):
            name = 'solr'

            def get_volumes(self):
                volume = EBSVolume('/dev/sdf', '/mnt/solr', size=20)
                volumes = [volume]
                return volumes
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load()
    assert loaded.names == ["solr"]
    snap = loaded.snapshotter("solr", USERDATA, META)
    spec = settings_mod.resolve(snap)
    assert spec.volumes == (VolumeSpec("/dev/sdf", "/mnt/solr", 20),)
    assert spec.filter_tags == {"role": "solr", "cluster": "solr-prod", "environment": "production"}
    assert snap.instance_id == "i-1"


def test_seed_custom_filter_tags_and_fs_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "settings.py").write_text(textwrap.dedent("""
        from snaptastic_boot import Snapshotter, EBSVolume

        class XFS:
            name = "xfs"

        class CustomFilterSnapshotter(Snapshotter):
            name = 'filter_example'
            def get_volumes(self):
                return [EBSVolume('/dev/sdg', '/var/lib/app', size=5, file_system=XFS)]
            def get_filter_tags(self):
                return {'group': self.userdata['group']}
    """))
    monkeypatch.setattr(settings_mod, "SETTINGS_FILES", (tmp_path / "missing.py", tmp_path / "settings.py"))
    loaded = load()
    spec = settings_mod.resolve(loaded.snapshotter("filter_example", {"group": "g1"}, META))
    assert spec.filter_tags == {"group": "g1"} and spec.volumes[0].filesystem == "xfs"
    with pytest.raises(BadInput, match=r"userdata\.group: missing"):
        settings_mod.resolve(loaded.snapshotter("filter_example", USERDATA, META))


def test_json_and_python_forms_make_the_same_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "snaptastic_settings.py").write_text(
        "from snaptastic_boot import Snapshotter, EBSVolume\n"
        "class S(Snapshotter):\n    name = 'py'\n"
        "    def get_volumes(self):\n        return [EBSVolume('/dev/sdf', '/mnt/solr', size=20)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_config(tmp_path, {"snapshotters": {"js": {"volumes": [solr_volume()]}}})
    loaded = load(path)
    a = settings_mod.resolve(loaded.snapshotter("py", USERDATA, META))
    b = settings_mod.resolve(loaded.snapshotter("js", USERDATA, META))
    assert (a.volumes, a.filter_tags, a.retention) == (b.volumes, b.filter_tags, b.retention)


def test_json_config_full_volume(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"snapshotters": {"db": {
        "volumes": [solr_volume(filesystem="xfs", volume_type="io2", iops=5000, encrypted=True, kms_key_id="alias/k",
                                mount_options="noatime,nodiratime", delete_on_termination=False)],
        "filter_tags": ["role", "environment"], "retention": {"days": 14, "keep": 5}}}})
    spec = settings_mod.resolve(load(path).snapshotter("db", USERDATA, META))
    v = spec.volumes[0]
    assert (v.filesystem, v.volume_type, v.iops, v.encrypted, v.delete_on_termination) == ("xfs", "io2", 5000, True, False)
    assert spec.filter_tags == {"role": "solr", "environment": "production"}
    assert (spec.retention.days, spec.retention.keep) == (14, 5)


def test_destination_regions_from_json_and_from_a_settings_class(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"snapshotters": {"db": {"volumes": [solr_volume()],
                                                          "destination_regions": ["us-west-2", "eu-central-1"]}}})
    spec = settings_mod.resolve(load(path).snapshotter("db", USERDATA, META))
    assert spec.destination_regions == ("us-west-2", "eu-central-1")
    plain = write_config(tmp_path, {"snapshotters": {"db": {"volumes": [solr_volume()]}}})
    assert settings_mod.resolve(load(plain).snapshotter("db", USERDATA, META)).destination_regions == ()


def test_config_from_environment_variable(tmp_path: Path) -> None:
    from snaptastic_boot.commands.context import Inputs, load_settings
    from snaptastic_boot.tunables import Tunables

    path = write_config(tmp_path, {"snapshotters": {"x": {"volumes": [solr_volume()]}}})
    assert load_settings(Inputs(), Tunables.from_env({"SNAPTASTIC_CONFIG": path})).names == ["x"]
    missing = Tunables.from_env({"SNAPTASTIC_CONFIG": str(tmp_path / "gone.json")})
    with pytest.raises(BadInput, match=r"gone\.json not found"):
        load_settings(Inputs(), missing)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"snapshoters": {}}, "config.snapshoters: unknown key; did you mean 'snapshotters'?"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(sise=3)]}}}, "sise: unknown key; did you mean 'size'?"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(size="20")]}}}, "size: must be of type integer"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(size=0)]}}}, "size: must be >= 1"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(size=20000)]}}}, "size: must be a whole number of GiB from 1 to 16384"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(volume_type="st1", size=20)]}}}, "from 125 to 16384 for st1"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(volume_type="gp2", iops=3000)]}}}, "gp2 volumes take no iops"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(volume_type="gp2", throughput=200)]}}}, "gp2 volumes take no throughput"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(volume_type="io1")]}}}, "io1 volumes need iops"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(filesystem="btrfs")]}}}, "filesystem: must be one of ext4, xfs"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(mount_point="mnt/solr")]}}}, "must be an absolute path"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(mount_point="/mnt/../etc")]}}}, "must not contain '..'"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(mount_point="/mnt//solr/")]}}}, "is not normalised"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(mount_point="/")]}}}, "is a system path"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(mount_point="/etc")]}}}, "is a system path"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(mount_point="/usr/local/x")]}}}, "is a system path"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(mount_point="/boot")]}}}, "is a system path"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(device="/dev/sda1")]}}}, "not a device name EC2 accepts"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(device="/dev/nvme1n1")]}}}, "not a device name EC2 accepts"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(mount_options="defaults;reboot")]}}}, "mount_options: must be a comma-separated"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(mount_options="$(id)")]}}}, "mount_options: must be a comma-separated"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(), solr_volume(device="/dev/sdg")]}}}, "mount_point: duplicate"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(), solr_volume(mount_point="/mnt/x", device="/dev/xvdf")]}}}, "device: duplicate"),
        ({"snapshotters": {"a": {"volumes": [solr_volume(kms_key_id="k")]}}}, "needs \"encrypted\": true"),
        ({"snapshotters": {"a": {"volumes": [solr_volume()], "destination_regions": ["us-west-2", "us-west-2"]}}},
         "destination_regions"),
        ({"snapshotters": {"a": {"volumes": [solr_volume()], "destination_regions": ["US West"]}}},
         "destination_regions[0]"),
        ({"snapshotters": {"a": {"volumes": [solr_volume()], "destination_regions": "us-west-2"}}},
         "destination_regions: must be of type array"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(BadInput) as err:
        load(write_config(tmp_path, data))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_config_not_json(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{")
    with pytest.raises(BadInput, match="is not valid JSON"):
        load(str(path))


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        load(str(tmp_path / "nope.json"))


def test_unknown_snapshotter_lists_known(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, {"snapshotters": {"solr": {"volumes": [solr_volume()]}}}))
    with pytest.raises(BadInput, match=r"snapshotter 'sorl' is not defined; did you mean 'solr'\? known: solr"):
        loaded.snapshotter("sorl", USERDATA, META)


def test_name_in_both_forms_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "snaptastic_settings.py").write_text(
        "from snaptastic_boot import Snapshotter, EBSVolume\nclass S(Snapshotter):\n    name = 'solr'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BadInput, match="defined both"):
        load(write_config(tmp_path, {"snapshotters": {"solr": {"volumes": [solr_volume()]}}}))


def test_broken_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "snaptastic_settings.py").write_text("class (:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BadInput, match="syntax error at line 1"):
        load()


def test_nested_mount_points_refused() -> None:
    problems = volume_problems([VolumeSpec("/dev/sdf", "/mnt/a", 1), VolumeSpec("/dev/sdg", "/mnt/a/b", 1)])
    assert any("nested" in m for _, m in problems)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(
        st.sampled_from(["snapshotters", "volumes", "device", "mount_point", "size", "volume_type", "iops", "x", "solr"]), c, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_fuzz_config_raises_only_our_error(value: object) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(value, f)
    try:
        load(f.name)
    except BadInput:
        pass
    finally:
        Path(f.name).unlink()


def test_a_config_that_is_not_utf8_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "snaptastic.json"
    path.write_bytes(b'{"snapshotters": {}} # caf\xe9')
    with pytest.raises(BadInput, match="not UTF-8"):
        load(str(path))


def test_clean_takes_its_name_after_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    from snaptastic_boot.cli import main

    # The name is accepted: the run then fails for want of a config, not of its arguments.
    assert main(["clean", "snapshots", "--force", "solr", "--config", "/nonexistent.json"]) == 2
    assert "nonexistent.json not found" in capsys.readouterr().err
    assert main(["clean", "snapshots", "--force", "solr", "extra", "--config", "/nonexistent.json"]) == 2
    assert "unrecognized arguments: solr extra" in capsys.readouterr().err


def test_the_defaults_have_one_home_that_the_schema_and_the_settings_api_repeat() -> None:
    from snaptastic_boot import model
    from snaptastic_boot.config.validation import load_schema
    from snaptastic_boot.snapshotter import EBSVolume, Snapshotter

    defs = load_schema("config.schema.json")["definitions"]
    snapshotter, retention, volume = (defs[k]["properties"] for k in ("snapshotter", "retention", "volume"))
    assert snapshotter["filter_tags"]["default"] == list(model.DEFAULT_FILTER_KEYS)
    assert snapshotter["pending_snapshot_wait"]["default"] == model.DEFAULT_PENDING_SNAPSHOT_WAIT
    assert snapshotter["consistent_restore"]["default"] == model.DEFAULT_CONSISTENT_RESTORE
    assert (retention["days"]["default"], retention["keep"]["default"]) == (model.DEFAULT_EXPIRY_DAYS, model.DEFAULT_KEEP)
    assert (volume["filesystem"]["default"], volume["volume_type"]["default"], volume["mount_options"]["default"],
            volume["delete_on_termination"]["default"]) == (model.DEFAULT_FILESYSTEM, model.DEFAULT_VOLUME_TYPE,
                                                            model.DEFAULT_MOUNT_OPTIONS, model.DEFAULT_DELETE_ON_TERMINATION)
    assert (Snapshotter.SNAPSHOT_EXPIRY_DAYS, Snapshotter.KEEP_SNAPSHOTS, Snapshotter.PENDING_SNAPSHOT_WAIT) == (
        model.DEFAULT_EXPIRY_DAYS, model.DEFAULT_KEEP, model.DEFAULT_PENDING_SNAPSHOT_WAIT)
    assert EBSVolume("/dev/sdf", "/mnt/x").spec() == VolumeSpec("/dev/sdf", "/mnt/x")
