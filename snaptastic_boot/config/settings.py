"""Find the snapshotters: the original Python settings file and the declarative JSON config.

Python settings, first found wins (as in the original): module `snaptastic_settings` on sys.path,
`/etc/snaptastic_settings.py`, `/etc/snaptastic/snaptastic_settings.py`.
JSON config: `--config PATH`, else `$SNAPTASTIC_CONFIG`, else `/etc/snaptastic/snaptastic.json` if it exists
(the caller resolves which, from the command line and `Tunables`).
Both may exist; a name defined in both is an error rather than a silent choice.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import logging
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from snaptastic_boot import messages
from snaptastic_boot.config.userdata import validate_keys
from snaptastic_boot.config.validation import load_schema, validate
from snaptastic_boot.errors import BadInput, ConfigError, ValidationFailed
from snaptastic_boot.model import SnapshotterSpec, reuse_problems, volume_problems
from snaptastic_boot.snapshotter import REGISTRY, ConfiguredSnapshotter, Snapshotter

log = logging.getLogger("snaptastic.settings")

SETTINGS_FILES = (Path("/etc/snaptastic_settings.py"), Path("/etc/snaptastic/snaptastic_settings.py"))


@dataclass
class Settings:
    python_source: str | None = None
    config_source: str | None = None
    python_classes: dict[str, type[Snapshotter]] = field(default_factory=dict)
    json_entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted({*self.python_classes, *self.json_entries})

    def snapshotter(self, name: str, userdata: dict[str, Any], metadata: dict[str, Any]) -> Snapshotter:
        if name in self.python_classes:
            return self.python_classes[name](userdata=userdata, metadata=metadata)
        if name in self.json_entries:
            return ConfiguredSnapshotter(name, self.json_entries[name], userdata=userdata, metadata=metadata)
        known = self.names
        close = difflib.get_close_matches(name, known, n=1)
        where = ", ".join(s for s in (self.python_source, self.config_source) if s) or "no settings file or config found"
        raise BadInput(messages.snapshotter_unknown(name, close[0] if close else None, known, where))


def load(path: Path, explicit: bool) -> Settings:
    """The settings file (if any) and the JSON config at `path` (which must exist when `explicit`)."""
    settings = Settings()
    _load_python(settings)
    if explicit or path.exists():
        settings.config_source = str(path)
        settings.json_entries = load_json_config(path)
    both = sorted(set(settings.python_classes) & set(settings.json_entries))
    if both:
        raise ConfigError(messages.defined_twice(both, settings.python_source, settings.config_source))
    return settings


def _load_python(settings: Settings) -> None:
    before = dict(REGISTRY)
    REGISTRY.clear()
    try:
        source = _import_settings()
        settings.python_source = source
        settings.python_classes = dict(REGISTRY)
    finally:
        REGISTRY.clear()
        REGISTRY.update(before)


def _import_settings() -> str | None:
    if importlib.util.find_spec("snaptastic_settings") is not None:
        try:
            module = importlib.import_module("snaptastic_settings")
        except Exception as exc:
            raise ConfigError(messages.settings_failed("settings module snaptastic_settings", _describe(exc))) from exc
        return str(getattr(module, "__file__", "snaptastic_settings"))
    for path in SETTINGS_FILES:
        if path.exists():
            spec = importlib.util.spec_from_file_location("snaptastic_settings", path)
            if spec is None or spec.loader is None:
                raise ConfigError(messages.settings_unloadable(path))
            module = importlib.util.module_from_spec(spec)
            sys.modules["snaptastic_settings"] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                raise ConfigError(messages.settings_failed(f"settings file {path}", _describe(exc))) from exc
            return str(path)
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"syntax error at line {exc.lineno}: {exc.msg}"
    return f"{type(exc).__name__}: {exc}"


def load_json_config(path: Path) -> dict[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(messages.config_not_found(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(messages.config_not_utf8(path, exc.start)) from exc
    except OSError as exc:
        raise ConfigError(messages.config_unreadable(path, exc.strerror)) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(messages.config_not_json(path, exc.msg, exc.lineno, exc.colno)) from exc
    validate(data, load_schema("config.schema.json"), "config")
    entries: dict[str, dict[str, Any]] = data["snapshotters"]
    for name, entry in entries.items():
        snap = ConfiguredSnapshotter(name, entry)
        problems = volume_problems([v.spec() for v in snap.get_volumes()], where=f"snapshotters.{name}.volumes")
        if entry.get("reuse_volumes"):
            problems += reuse_problems(replace(SnapshotterSpec(name, tuple(v.spec() for v in snap.get_volumes()), {}),
                                               reuse_volumes=True))
        if problems:
            raise ValidationFailed("config", problems)
    return entries


def resolve(snapshotter: Snapshotter) -> SnapshotterSpec:
    """The snapshotter's plain-data spec; bad userdata or volumes become BadInput naming the field."""
    if isinstance(snapshotter, ConfiguredSnapshotter):
        validate_keys(snapshotter.userdata, snapshotter.filter_keys())
    try:
        spec = snapshotter.spec()
    except KeyError as exc:
        raise BadInput(messages.userdata_key_missing(exc.args[0], str(snapshotter.name))) from exc
    validate_keys(spec.filter_tags, spec.filter_tags.keys())
    if "mount_point" in spec.filter_tags:
        raise BadInput(messages.filter_tags_with_mount_point(spec.name))
    if not isinstance(snapshotter, ConfiguredSnapshotter):
        _validate_settings_values(type(snapshotter).__name__, spec)
    problems = volume_problems(spec.volumes, where=f"snapshotter '{spec.name}' volumes") + reuse_problems(spec)
    if problems:
        raise ValidationFailed("settings", problems)
    if not spec.volumes:
        raise BadInput(messages.no_volumes(spec.name))
    return spec


# The settings-file names of the values the JSON config calls otherwise, for messages that name what the user wrote.
_SETTINGS_NAMES = {"retention.days": "SNAPSHOT_EXPIRY_DAYS", "retention.keep": "KEEP_SNAPSHOTS",
                   "pending_snapshot_wait": "PENDING_SNAPSHOT_WAIT", "consistent_restore": "CONSISTENT_RESTORE",
                   "reuse_volumes": "REUSE_VOLUMES", "destination_regions": "destination_regions"}


def _validate_settings_values(class_name: str, spec: SnapshotterSpec) -> None:
    """A settings-file snapshotter gets the same schema and bounds as a JSON one: its values, written as the
    JSON config would hold them, are checked against the config schema's snapshotter definition."""
    entry = {
        "volumes": [{k: v for k, v in asdict(vol).items() if v is not None} for vol in spec.volumes],
        "retention": {"days": spec.retention.days, "keep": spec.retention.keep},
        "pending_snapshot_wait": spec.pending_snapshot_wait,
        "consistent_restore": spec.consistent_restore,
        "reuse_volumes": spec.reuse_volumes,
        "destination_regions": list(spec.destination_regions),
    }
    schema = load_schema("config.schema.json")
    try:
        validate(entry, {**schema, "$ref": "#/definitions/snapshotter"}, "settings")
    except ValidationFailed as exc:
        named = [(f"{class_name}.{_settings_name(path)}", message) for path, message in exc.problems]
        raise ValidationFailed("settings", named) from exc


def _settings_name(path: str) -> str:
    if path.startswith("volumes["):
        return "get_volumes()" + path[len("volumes"):]
    return _SETTINGS_NAMES.get(path, path)
