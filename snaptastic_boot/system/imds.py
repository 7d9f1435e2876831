"""Instance metadata (IMDS): IMDSv2 tokens first, IMDSv1 only where the token call is not supported.

The base URL comes from the standard AWS_EC2_METADATA_SERVICE_ENDPOINT, so IPv6 IMDS and the lab work.
IMDS can be slow or absent for the first seconds of boot: every call has a short timeout and a bounded list
of backoff sleeps. The token is never logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from snaptastic_boot import messages
from snaptastic_boot.errors import MetadataUnavailable
from snaptastic_boot.system import http

log = logging.getLogger("snaptastic.imds")

TOKEN_TTL_SECONDS = 21600
# A token is renewed this long before it expires, so that no read of a long-running watch meets a 401 on time.
TOKEN_RENEW_MARGIN = 60.0
# One poll of a long-running watch reads once with this bound; the next poll is the retry.
POLL_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0
# Each read of the service gives up after this many seconds in all (SNAPTASTIC_IMDS_TIMEOUT): long enough for
# IMDS to come up early in boot, short enough to fail clearly.
DEFAULT_BUDGET = 30.0
# A service that answers, but slowly, gets longer to answer at each retry (a fixed 2 s would never reach one
# that takes 2.5 s); every timeout is also cut to what is left of the budget.
READ_TIMEOUTS: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0)
BACKOFF_SLEEPS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0)


@dataclass(frozen=True)
class InstanceMetadata:
    instance_id: str
    region: str
    availability_zone: str
    instance_type: str
    account_id: str = ""
    image_id: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "instance-id": self.instance_id,
            "region": self.region,
            "availability-zone": self.availability_zone,
            "instance-type": self.instance_type,
            "account-id": self.account_id,
            "ami-id": self.image_id,
        }


class _TokenUnsupported(Exception):
    pass


class ImdsClient:
    def __init__(
        self,
        endpoint: str,
        *,
        budget: float | None = None,
        sleeps: Sequence[float] = BACKOFF_SLEEPS,
        session: http.Session | None = None,
        token_ttl: int = TOKEN_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = endpoint.rstrip("/") + "/"
        self.budget = DEFAULT_BUDGET if budget is None else budget
        self.sleeps = tuple(sleeps)
        # Where the read timeouts start: a service that was slow for one path is slow for the next.
        self._level = 0
        self.session = session or http.Session()
        self._token: str | None = None
        self.token_ttl = token_ttl
        self._clock = clock
        self._token_expires = 0.0
        self.tokens_fetched = 0
        self.version: str | None = None  # "v2" or "v1" once known

    # -- public reads -------------------------------------------------------------------------------------

    def instance_metadata(self) -> InstanceMetadata:
        """From the instance identity document (one call), else from the single meta-data paths."""
        doc_text = self.get("latest/dynamic/instance-identity/document")
        if doc_text is None:
            return self._from_paths()
        try:
            doc: dict[str, Any] = json.loads(doc_text)
            return InstanceMetadata(
                instance_id=doc["instanceId"],
                region=doc["region"],
                availability_zone=doc["availabilityZone"],
                instance_type=doc.get("instanceType", ""),
                account_id=doc.get("accountId", ""),
                image_id=doc.get("imageId", ""),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MetadataUnavailable(messages.imds_bad_identity(exc)) from exc

    def _from_paths(self) -> InstanceMetadata:
        instance_id = self.get("latest/meta-data/instance-id")
        zone = self.get("latest/meta-data/placement/availability-zone")
        if not instance_id or not zone:
            raise MetadataUnavailable(messages.IMDS_NO_IDENTITY)
        # Zones are the region plus one letter (us-east-1a); local and wavelength zones answer placement/region.
        region = self.get("latest/meta-data/placement/region") or zone.strip()[:-1]
        return InstanceMetadata(
            instance_id=instance_id.strip(),
            region=region.strip(),
            availability_zone=zone.strip(),
            instance_type=(self.get("latest/meta-data/instance-type") or "").strip(),
            image_id=(self.get("latest/meta-data/ami-id") or "").strip(),
        )

    def user_data(self) -> bytes | None:
        """Raw userdata, or None when the instance has none (IMDS answers 404)."""
        return self.get_bytes("latest/user-data")

    def poll(self, path: str, timeout: float = POLL_TIMEOUT) -> bytes | None:
        """One read for a loop that polls: the body, or None on 404 (nothing there). No backoff: the next
        poll is the retry. The token is reused across polls until shortly before it expires; a 401 (the
        service restarted) gets a new one and one more try. Raises MetadataUnavailable when it fails."""
        url = self.base + path
        for attempt in (1, 2):
            try:
                resp = self.session.get(url, headers=self._auth_headers(timeout), timeout=(CONNECT_TIMEOUT, timeout))
            except http.HttpError as exc:
                raise MetadataUnavailable(messages.imds_poll_failed(path, _describe(exc))) from exc
            if resp.status_code == 401 and self.version == "v2" and attempt == 1:
                self._token = None
                continue
            if resp.status_code == 404:
                return None
            if resp.status_code == 200:
                return resp.content
            raise MetadataUnavailable(messages.imds_poll_failed(path, f"HTTP {resp.status_code}"))
        raise MetadataUnavailable(messages.imds_poll_failed(path, "token rejected (HTTP 401)"))

    # -- protocol ------------------------------------------------------------------------------------------

    def get(self, path: str) -> str | None:
        data = self.get_bytes(path)
        return None if data is None else data.decode("utf-8", errors="replace")

    def get_bytes(self, path: str) -> bytes | None:
        url = self.base + path
        started = time.monotonic()
        deadline = started + self.budget
        seen: list[str] = []
        for attempt in range(len(self.sleeps) + 1):
            level = min(self._level + attempt, len(READ_TIMEOUTS) - 1)
            timeout = min(READ_TIMEOUTS[level], max(deadline - time.monotonic(), 0.1))
            error = ""
            try:
                headers = self._auth_headers(timeout)
                resp = self.session.get(url, headers=headers, timeout=(CONNECT_TIMEOUT, timeout))
                if resp.status_code == 401 and self.version == "v2":
                    # Token expired or the service restarted: get a new one and try again.
                    self._token = None
                    error = "token rejected (HTTP 401)"
                elif resp.status_code == 404:
                    self._level = level
                    return None
                elif resp.status_code == 403:
                    raise MetadataUnavailable(messages.imds_refused(path))
                elif resp.status_code == 200:
                    self._level = level
                    return resp.content
                else:
                    error = f"HTTP {resp.status_code}"
            except http.HttpError as exc:
                error = _describe(exc)
            if error not in seen:
                seen.append(error)
            sleep = self.sleeps[attempt] if attempt < len(self.sleeps) else None
            if sleep is None or time.monotonic() + sleep >= deadline:
                break
            log.debug("metadata %s: %s; retry %d in %.1fs", path, error, attempt + 1, sleep)
            time.sleep(sleep)
        raise MetadataUnavailable(messages.imds_no_answer(self.base, path, time.monotonic() - started, seen))

    def _auth_headers(self, timeout: float) -> dict[str, str]:
        if self.version == "v1":
            return {}
        if self._token is not None and self._clock() >= self._token_expires:
            self._token = None
        if self._token is None:
            try:
                asked = self._clock()
                self._token = self._fetch_token(timeout)
                self.tokens_fetched += 1
                self._token_expires = asked + max(self.token_ttl - TOKEN_RENEW_MARGIN, self.token_ttl / 2)
                self.version = "v2"
            except _TokenUnsupported:
                log.warning("metadata service does not support IMDSv2 tokens; using IMDSv1")
                self.version = "v1"
                return {}
        return {"X-aws-ec2-metadata-token": self._token}

    def _fetch_token(self, timeout: float) -> str:
        resp = self.session.put(
            self.base + "latest/api/token",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl)},
            timeout=(CONNECT_TIMEOUT, timeout),
        )
        if resp.status_code in (404, 405):
            raise _TokenUnsupported()
        if resp.status_code == 403:
            raise MetadataUnavailable(messages.IMDS_TOKEN_REFUSED)
        if resp.status_code != 200:
            # 5xx and the like: let the caller's retry loop handle it.
            raise http.HttpError(f"HTTP {resp.status_code} for a token")
        return resp.text.strip()


def _describe(exc: http.HttpError) -> str:
    """What went wrong, in words an operator greps for: the HTTP status where there was one."""
    if isinstance(exc, http.Timeout):
        return "no answer in time"
    if isinstance(exc, http.ConnectError):
        return "connection refused or unreachable"
    return str(exc) or type(exc).__name__
