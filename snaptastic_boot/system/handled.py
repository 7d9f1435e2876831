"""The notices `snaptastic watch` has handled, kept in the run directory so a restarted watch does not act twice.

The file is small JSON, written atomically (temporary file, fsync, rename). A missing or unreadable file is an
empty history: at worst a notice is acted on again, which costs a snapshot, never data.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from snaptastic_boot import messages

log = logging.getLogger("snaptastic.watch")


def load(path: Path) -> tuple[frozenset[str], bool]:
    """(keys of the handled notices, whether the volumes were released)."""
    try:
        doc = json.loads(path.read_text())
        return frozenset(str(k) for k in doc.get("handled", [])), bool(doc.get("released", False))
    except FileNotFoundError:
        return frozenset(), False
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return frozenset(), False


def save(path: Path, handled: frozenset[str], released: bool) -> None:
    """Record the history; a failure is logged, not raised: the watch goes on."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump({"handled": sorted(handled), "released": released}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        log.error("%s", messages.watch_state_unwritable(path, exc.strerror))
