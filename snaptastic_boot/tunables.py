"""Everything the environment can tune, read once at start-up into one object that is passed down.

Nothing below the commands reads `os.environ`: a test or the lab sets variables for a whole run, and a
reader of the code finds every knob here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from snaptastic_boot.system.paths import Paths

DEFAULT_CONFIG = "/etc/snaptastic/snaptastic.json"
DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254/"
# The freeze bound: filesystems are thawed after this many seconds whatever happens.
DEFAULT_MAX_FREEZE = 30.0
DEFAULT_CREDENTIALS_TIMEOUT = 5.0
DEFAULT_CREDENTIALS_ATTEMPTS = 3
DEFAULT_API_DEADLINE = 600.0
DEFAULT_METRICS_DIR = "/var/lib/prometheus/node-exporter"  # node_exporter's textfile collector, as Debian sets it


@dataclass(frozen=True)
class Tunables:
    paths: Paths
    config_path: str
    config_explicit: bool
    imds_endpoint: str
    ec2_endpoint: str | None
    autoscaling_endpoint: str | None
    region: str | None
    wait_timeout: float | None
    imds_timeout: float | None
    max_freeze: float
    credentials_timeout: float
    credentials_attempts: int
    api_deadline: float
    expedite_freeze: bool = True
    metrics_dir: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tunables:
        env = os.environ if environ is None else environ
        config = env.get("SNAPTASTIC_CONFIG") or ""
        return cls(
            # A virtual machine's NVMe controller cannot claim Amazon's model string; a test names its own here.
            paths=replace(Paths.from_env(env), extra_nvme_models=nvme_models(env.get("SNAPTASTIC_NVME_MODELS"))),
            config_path=config or DEFAULT_CONFIG,
            config_explicit=bool(config),
            imds_endpoint=env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_IMDS_ENDPOINT,
            # Older botocore (Debian 12 ships 1.29) does not read AWS_ENDPOINT_URL_EC2 itself.
            ec2_endpoint=env.get("AWS_ENDPOINT_URL_EC2") or env.get("AWS_ENDPOINT_URL") or None,
            autoscaling_endpoint=env.get("AWS_ENDPOINT_URL_AUTO_SCALING") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            wait_timeout=_seconds(env.get("SNAPTASTIC_WAIT_TIMEOUT")),
            imds_timeout=_seconds(env.get("SNAPTASTIC_IMDS_TIMEOUT")),
            max_freeze=_seconds(env.get("SNAPTASTIC_MAX_FREEZE")) or DEFAULT_MAX_FREEZE,
            # botocore's own variables for its instance-profile reads, with defaults fit for a slow early boot.
            credentials_timeout=_seconds(env.get("AWS_METADATA_SERVICE_TIMEOUT")) or DEFAULT_CREDENTIALS_TIMEOUT,
            # How long a run keeps retrying throttled and failing EC2 calls, well inside the units' start limits.
            api_deadline=_seconds(env.get("SNAPTASTIC_API_DEADLINE")) or DEFAULT_API_DEADLINE,
            # Expedited RCU grace periods while frozen (system/kernel.py): on unless turned off.
            expedite_freeze=(env.get("SNAPTASTIC_EXPEDITE_FREEZE") or "1").strip().lower() not in ("0", "false", "no"),
            # Prometheus textfile directory; an empty value turns the metrics off.
            metrics_dir=env.get("SNAPTASTIC_METRICS_DIR", DEFAULT_METRICS_DIR) or None,
            credentials_attempts=int(_seconds(env.get("AWS_METADATA_SERVICE_NUM_ATTEMPTS")) or DEFAULT_CREDENTIALS_ATTEMPTS),
        )


def nvme_models(raw: str | None) -> tuple[str, ...]:
    """`A,B` -> ("A", "B"): model strings hold spaces, so they are separated by commas."""
    return tuple(m.strip() for m in (raw or "").split(",") if m.strip())


def _seconds(raw: str | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None
