"""Command line: argument parsing, logging set-up, and the one place errors become exit codes.

Only the standard library is imported at module level: `--help` and `--version` run at boot and must not pay
for boto3. Each `_cmd_<name>` imports its command module when it runs and passes it explicit parameters.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable

from snaptastic_boot import __version__, messages
from snaptastic_boot.errors import EXIT_BAD_INPUT, EXIT_FAILED, SnaptasticError, UsageError

log = logging.getLogger("snaptastic")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _Parser(argparse.ArgumentParser):
    """argparse prints usage and exits 2 by itself; we want our one-line error and our exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(messages.usage(self.prog, message))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--userdata",
        metavar="JSON",
        help="use this JSON instead of the instance's userdata (for porting old systems)",
    )
    parser.add_argument("--config", metavar="PATH", help="JSON config (default $SNAPTASTIC_CONFIG or /etc/snaptastic/snaptastic.json)")
    parser.add_argument("--loglevel", default=None, type=str.upper, choices=LOG_LEVELS, help="log level (default INFO)")
    parser.add_argument("-v", "--verbose", action="store_true", help="same as --loglevel DEBUG")
    parser.add_argument("--version", action="version", version=f"snaptastic-boot {__version__}")


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(messages.keep_at_least_one(text))
    return value


def _changing(sub: argparse._SubParsersAction, command: str, help: str) -> argparse.ArgumentParser:
    """A command that changes a snapshotter's volumes: NAME, --dry-run and --json."""
    p = sub.add_parser(command, help=help)
    p.add_argument("name", metavar="NAME", help="snapshotter name")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    return p


def _add_test(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="show metadata and userdata, check credentials and required tools")
    _common(p)
    p.set_defaults(func=_cmd_test)


def _add_list_volumes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list-volumes", help="list the configured volumes of a snapshotter and their state")
    p.add_argument("name", metavar="NAME", help="snapshotter name")
    p.add_argument("--json", action="store_true", help="print JSON")
    _common(p)
    p.set_defaults(func=_cmd_list_volumes)


def _add_mount_snapshots(sub: argparse._SubParsersAction) -> None:
    p = _changing(sub, "mount-snapshots", "create volumes from the newest snapshots, attach and mount them")
    p.add_argument(
        "--snapshot",
        action="append",
        default=[],
        metavar="MOUNT=SNAP_ID",
        help="restore MOUNT from this snapshot instead of the newest (repeatable)",
    )
    p.add_argument("--before", metavar="TIMESTAMP", help="restore the newest snapshots taken before this time (ISO 8601)")
    p.add_argument("--force", action="store_true", help="accept a --snapshot whose tags do not match this snapshotter")
    p.add_argument("--ignore-mounted", action="store_true", help="accepted for compatibility; mounted volumes are always left alone")
    _common(p)
    p.set_defaults(func=_cmd_mount_snapshots)


def _add_make_snapshots(sub: argparse._SubParsersAction) -> None:
    p = _changing(sub, "make-snapshots", "freeze, snapshot and thaw the mounted volumes of a snapshotter")
    p.add_argument("--no-freeze", action="store_true", help="do not freeze (the application already quiesced)")
    p.add_argument("--wait", action="store_true", help="wait until the snapshots are completed")
    _common(p)
    p.set_defaults(func=_cmd_make_snapshots)


def _add_unmount_snapshots(sub: argparse._SubParsersAction) -> None:
    p = _changing(sub, "unmount-snapshots", "unmount and detach the volumes of a snapshotter")
    p.add_argument("--delete", action="store_true", help="also delete the detached volumes")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _common(p)
    p.set_defaults(func=_cmd_unmount_snapshots)


def _add_copy_snapshots(sub: argparse._SubParsersAction) -> None:
    p = _changing(sub, "copy-snapshots", "copy complete snapshot sets to the snapshotter's destination regions")
    _common(p)
    p.set_defaults(func=_cmd_copy_snapshots)


def _add_clean(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clean", help="delete expired snapshots or leaked volumes of a snapshotter")
    p.add_argument("component", choices=("snapshots", "volumes"), help="what to clean")
    p.add_argument("name", metavar="NAME", nargs="?", help="snapshotter name (default: every configured one)")
    p.add_argument("--keep", type=_at_least_one, default=None, metavar="K",
                   help="always keep the newest K snapshots per mount point (K >= 1)")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    p.add_argument("--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    _common(p)
    p.set_defaults(func=_cmd_clean)


def _add_check_backups(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-backups", help="alert when the newest backup of a mount point is too old or incomplete")
    p.add_argument("name", metavar="NAME", nargs="?", help="snapshotter name (default: every configured one)")
    p.add_argument("--age", default="1d", help="maximum age, like 90m, 12h, 1d (default 1d)")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="check the volumes and snapshots with these tags instead of the configured snapshotters "
                        "(repeatable; runs off EC2 with AWS_REGION)")
    p.add_argument("--role", help="same as --tag role=ROLE")
    p.add_argument("--cluster", help="same as --tag cluster=CLUSTER")
    p.add_argument("--environment", help="same as --tag environment=ENVIRONMENT")
    p.add_argument("--region", type=_region, help="check this region's snapshots (a destination of copy-snapshots) instead of "
                                    "the instance's own")
    p.add_argument("--json", action="store_true", help="print JSON")
    _common(p)
    p.set_defaults(func=_cmd_check_backups)


def _region(text: str) -> str:
    """A region name as the config's destination_regions takes it (the schema holds the pattern)."""
    import re

    from snaptastic_boot.config.validation import load_schema

    snapshotter = load_schema("config.schema.json")["definitions"]["snapshotter"]
    if not re.fullmatch(snapshotter["properties"]["destination_regions"]["items"]["pattern"], text):
        raise argparse.ArgumentTypeError(messages.bad_region(text))
    return text


def _interval(text: str) -> float:
    from snaptastic_boot.model import WATCH_INTERVAL_LIMITS

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not WATCH_INTERVAL_LIMITS[0] <= value <= WATCH_INTERVAL_LIMITS[1]:
        raise argparse.ArgumentTypeError(messages.bad_interval(text))
    return value


def _add_watch(sub: argparse._SubParsersAction) -> None:
    from snaptastic_boot.model import DEFAULT_WATCH_INTERVAL

    p = sub.add_parser("watch", help="snapshot at once on a Spot interruption or Auto Scaling termination notice")
    p.add_argument("names", nargs="+", metavar="NAME", help="snapshotter names")
    p.add_argument("--lifecycle-hook", metavar="HOOK",
                   help="complete this termination lifecycle hook (CONTINUE) once the snapshots returned")
    p.add_argument("--no-rebalance", action="store_true", help="do not snapshot on rebalance recommendations")
    p.add_argument("--interval", type=_interval, default=DEFAULT_WATCH_INTERVAL, metavar="SECONDS",
                   help=f"seconds between polls of the metadata service (default {DEFAULT_WATCH_INTERVAL:g})")
    _common(p)
    p.set_defaults(func=_cmd_watch)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="snaptastic", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.description = "Restore EBS volumes from tagged snapshots at boot; snapshot them at shutdown."
    parser.add_argument("--version", action="version", version=f"snaptastic-boot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_test, _add_list_volumes, _add_mount_snapshots, _add_make_snapshots, _add_unmount_snapshots, _add_copy_snapshots, _add_clean, _add_check_backups,
                _add_watch):
        add(sub)
    return parser


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # journald adds its own timestamp; keep lines short and greppable.
    handler.setFormatter(logging.Formatter("snaptastic: %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(getattr(logging, level))


def _inputs(args: argparse.Namespace) -> Any:
    from snaptastic_boot.commands.context import Inputs

    return Inputs(config=args.config, userdata=args.userdata)


def _cmd_test(args: argparse.Namespace) -> int:
    from snaptastic_boot.commands import test

    return test.run(_inputs(args))


def _cmd_list_volumes(args: argparse.Namespace) -> int:
    from snaptastic_boot.commands import list_volumes

    return list_volumes.run(args.name, _inputs(args), as_json=args.json)


def _cmd_mount_snapshots(args: argparse.Namespace) -> int:
    from snaptastic_boot.commands import mount_snapshots

    return mount_snapshots.run(args.name, _inputs(args), pins=args.snapshot, before=args.before, force=args.force,
                               dry_run=args.dry_run, as_json=args.json)


def _cmd_make_snapshots(args: argparse.Namespace) -> int:
    from snaptastic_boot.commands import make_snapshots

    return make_snapshots.run(args.name, _inputs(args), freeze=not args.no_freeze, wait=args.wait,
                              dry_run=args.dry_run, as_json=args.json)


def _cmd_unmount_snapshots(args: argparse.Namespace) -> int:
    from snaptastic_boot.commands import unmount_snapshots

    return unmount_snapshots.run(args.name, _inputs(args), delete=args.delete, yes=args.yes, dry_run=args.dry_run,
                                 as_json=args.json)


def _cmd_copy_snapshots(args: argparse.Namespace) -> int:
    from snaptastic_boot.commands import copy_snapshots

    return copy_snapshots.run(args.name, _inputs(args), dry_run=args.dry_run, as_json=args.json)


def _cmd_clean(args: argparse.Namespace) -> int:
    from snaptastic_boot.commands import clean

    return clean.run(args.component, args.name, _inputs(args), keep=args.keep, dry_run=args.dry_run,
                     force=args.force, as_json=args.json)


def _cmd_check_backups(args: argparse.Namespace) -> int:
    from snaptastic_boot.commands import check_backups

    given = {"role": args.role, "cluster": args.cluster, "environment": args.environment}
    return check_backups.run(_inputs(args), name=args.name, age=args.age, given=given, tag_args=args.tag,
                             region=args.region, as_json=args.json)


def _cmd_watch(args: argparse.Namespace) -> int:
    from snaptastic_boot.commands import watch

    return watch.run(args.names, _inputs(args), lifecycle_hook=args.lifecycle_hook or None, rebalance=not args.no_rebalance,
                     interval=args.interval)


def _dispatch(argv: list[str], ran: dict[str, argparse.Namespace]) -> int:
    """Parse and run; the one place errors become exit codes. `ran` gets the parsed arguments."""
    parser = build_parser()
    level = "INFO"
    try:
        args, extra = parser.parse_known_args(argv)
        # argparse fills `clean`'s optional NAME before it sees the options, so `clean snapshots --force solr`
        # leaves the name over; a single plain word left over is that name.
        if extra and getattr(args, "command", None) == "clean" and args.name is None and len(extra) == 1 \
                and not extra[0].startswith("-"):
            args.name, extra = extra[0], []
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        ran["args"] = args
        level = "DEBUG" if getattr(args, "verbose", False) else (getattr(args, "loglevel", None) or "INFO")
        _configure_logging(level)
        func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return EXIT_BAD_INPUT
        return func(args)
    except SnaptasticError as exc:
        if level == "DEBUG":
            log.exception("error")
        print(f"snaptastic: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("snaptastic: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        print(f"snaptastic: unexpected error (this is a bug, please report it): {exc!r}", file=sys.stderr)
        if level == "DEBUG":
            raise
        return EXIT_FAILED


# Commands whose runs are recorded for node_exporter's textfile collector: those that change something, and
# the backup check.
RECORDED = ("mount-snapshots", "make-snapshots", "unmount-snapshots", "clean", "check-backups", "copy-snapshots")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ran: dict[str, argparse.Namespace] = {}
    command = next((a for a in argv if not a.startswith("-")), "")
    observation = None
    if command in RECORDED:
        from snaptastic_boot import metrics

        observation = metrics.begin(command, "")
    started = time.monotonic()
    try:
        code = _dispatch(argv, ran)
    finally:
        if observation is not None:
            from snaptastic_boot import metrics

            metrics.end()
    args = ran.get("args")
    if observation is not None and args is not None and not getattr(args, "dry_run", False):
        observation.snapshotter = getattr(args, "name", None) or "all"
        _write_metrics(observation, code, time.monotonic() - started)
    return code


def _write_metrics(observation: Any, code: int, seconds: float) -> None:
    """Metrics never change a run's outcome: a directory that is missing means no collector (nothing written),
    any other problem is a warning."""
    from pathlib import Path

    from snaptastic_boot import metrics
    from snaptastic_boot.system import textfile
    from snaptastic_boot.tunables import Tunables

    directory = Tunables.from_env().metrics_dir
    if not directory or not Path(directory).is_dir():
        return
    path = Path(directory) / metrics.file_name(observation.command, observation.snapshotter)
    try:
        observation.finish(code, time.time(), seconds, metrics.last_success(textfile.read(path)))
        textfile.write_atomic(path, metrics.render(observation.samples))
    except OSError as exc:
        log.warning("could not write metrics to %s: %s", path, exc.strerror or exc)
    except Exception as exc:  # the run is over: a fault in its metrics must not become its outcome
        log.warning("could not write metrics to %s: %r", path, exc)


if __name__ == "__main__":
    sys.exit(main())
