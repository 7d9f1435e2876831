"""Every system path the agent touches, overridable from the environment for the lab and the tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    dev_root: Path
    sys_root: Path
    fstab: Path
    run_dir: Path
    # NVMe model strings accepted as EBS besides Amazon's own (SNAPTASTIC_NVME_MODELS, read in tunables.py).
    extra_nvme_models: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Paths:
        return cls(
            dev_root=Path(env.get("SNAPTASTIC_DEV_ROOT", "/dev")),
            sys_root=Path(env.get("SNAPTASTIC_SYS_ROOT", "/sys")),
            fstab=Path(env.get("SNAPTASTIC_FSTAB", "/etc/fstab")),
            run_dir=Path(env.get("SNAPTASTIC_RUN_DIR", "/run/snaptastic")),
        )

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "snaptastic.lock"

    @property
    def copy_lock_file(self) -> Path:
        """copy-snapshots' own lock: two runs would start the same copies twice (CopySnapshot takes no client
        token), yet a copy must never keep a snapshot or a restore waiting."""
        return self.run_dir / "copy.lock"

    @property
    def watch_state(self) -> Path:
        """The notices `snaptastic watch` handled on this boot (the run directory is emptied at boot)."""
        return self.run_dir / "watch-notices.json"
