"""An instance metadata service speaking IMDSv2 as EC2 does, on 127.0.0.1.

Token: `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1..21600) answers a token;
GETs carry it in `X-aws-ec2-metadata-token`. A missing token answers 401 when tokens are required
(`imds_mode = "v2"`); a wrong or expired token answers 401 in every mode that knows tokens, as EC2 does.
`"v1-only"` is an old service that does not know the token call (404) and answers every GET.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from snaptastic_lab.faults import Faults

MAX_TOKEN_TTL = 21600
# Dated versions of the metadata API that EC2 serves beside `latest` (those cloud-init asks for among them).
API_VERSIONS = ("1.0", "2007-01-19", "2009-04-04", "2016-09-02", "2018-09-24", "2021-03-23")
ROLE_NAME = "snaptastic-lab-role"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class InstanceIdentity:
    """What the metadata service knows about the instance it runs on."""

    instance_id: str
    region: str
    availability_zone: str
    instance_type: str
    image_id: str
    account_id: str
    private_ip: str
    userdata: bytes | None
    pending_time: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    # Notices, as EC2 shows them (None: the path answers 404): a Spot interruption, a rebalance recommendation,
    # and the Auto Scaling target lifecycle state (only for an instance in a group).
    spot_action: dict[str, str] | None = None
    rebalance: dict[str, str] | None = None
    lifecycle_state: str | None = None

    @property
    def local_hostname(self) -> str:
        return f"ip-{self.private_ip.replace('.', '-')}.ec2.internal"

    def document(self) -> dict[str, Any]:
        return {
            "accountId": self.account_id,
            "architecture": "x86_64",
            "availabilityZone": self.availability_zone,
            "billingProducts": None,
            "devpayProductCodes": None,
            "marketplaceProductCodes": None,
            "imageId": self.image_id,
            "instanceId": self.instance_id,
            "instanceType": self.instance_type,
            "kernelId": None,
            "pendingTime": _iso(self.pending_time),
            "privateIp": self.private_ip,
            "ramdiskId": None,
            "region": self.region,
            "version": "2017-09-30",
        }


class MetadataService:
    """The IMDS server; `identity` can be swapped at any time (a replacement instance booting)."""

    def __init__(self, identity: InstanceIdentity, faults: Faults) -> None:
        self.identity = identity
        self.faults = faults
        self.access_key_id = "ASIA" + secrets.token_hex(8).upper()
        self.secret_access_key = secrets.token_urlsafe(30)
        self.session_token = secrets.token_urlsafe(96)
        self.requests: list[tuple[str, str, int]] = []
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._closed = False
        faults.on_change("imds_down", self._set_down)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="lab-imds", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def close(self) -> None:
        """Stop for good: the imds_down knob no longer brings the server back."""
        self._closed = True
        self.stop()

    def _set_down(self, down: bool) -> None:
        # Connection refused, as when the hypervisor's metadata endpoint is not there yet.
        if self._closed:
            return
        if down and self._server is not None:
            self.stop()
        elif not down and self._server is None and self.port:
            self.start()

    # The protocol, kept apart from the HTTP plumbing.

    def new_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(40)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl
        return token

    def token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and time.monotonic() < expiry

    def credentials(self) -> dict[str, str]:
        now = datetime.now(timezone.utc)
        return {
            "Code": "Success",
            "LastUpdated": _iso(now),
            "Type": "AWS-HMAC",
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.session_token,
            "Expiration": _iso(now + timedelta(days=365)),
        }

    def lookup(self, path: str) -> tuple[int, bytes, str]:
        """(status, body, content type) for a GET path. Dated API versions (what cloud-init asks for) answer
        as `latest` does; the root lists them."""
        ident = self.identity
        text = "text/plain"
        if path == "/":
            return 200, "\n".join([*API_VERSIONS, "latest"]).encode(), text
        version, _, rest = path[1:].partition("/")
        if version in API_VERSIONS:
            path = "/latest/" + rest
        if path == "/latest/user-data":
            if ident.userdata is None:
                return 404, b"Not Found", "text/html"
            return 200, ident.userdata, "application/octet-stream"
        if path == "/latest/dynamic/instance-identity/document":
            return 200, json.dumps(ident.document(), indent=2).encode(), text
        creds_dir = "/latest/meta-data/iam/security-credentials/"
        values: dict[str, str] = {
            "/latest/meta-data/instance-id": ident.instance_id,
            "/latest/meta-data/instance-type": ident.instance_type,
            "/latest/meta-data/ami-id": ident.image_id,
            "/latest/meta-data/local-hostname": ident.local_hostname,
            "/latest/meta-data/hostname": ident.local_hostname,
            "/latest/meta-data/local-ipv4": ident.private_ip,
            "/latest/meta-data/placement/availability-zone": ident.availability_zone,
            "/latest/meta-data/placement/region": ident.region,
            "/latest/meta-data/": "\n".join(
                [
                    "ami-id",
                    "hostname",
                    "iam/",
                    "instance-id",
                    "instance-type",
                    "local-hostname",
                    "local-ipv4",
                    "placement/",
                ]
            ),
            "/latest/": "dynamic\nmeta-data\nuser-data",
            "/latest/dynamic/": "instance-identity/",
            "/latest/dynamic/instance-identity/": "document",
            "/latest/meta-data/placement/": "availability-zone\nregion",
            "/latest/meta-data/iam/": "info\nsecurity-credentials/",
            creds_dir: ROLE_NAME,
            creds_dir + ROLE_NAME: json.dumps(self.credentials(), indent=2),
            "/latest/meta-data/iam/info": json.dumps(
                {
                    "Code": "Success",
                    "LastUpdated": _iso(datetime.now(timezone.utc)),
                    "InstanceProfileArn": f"arn:aws:iam::{ident.account_id}:instance-profile/{ROLE_NAME}",
                    "InstanceProfileId": "AIPA" + ident.instance_id[2:].upper().ljust(17, "X")[:17],
                },
                indent=2,
            ),
        }
        if ident.spot_action is not None:
            values["/latest/meta-data/spot/instance-action"] = json.dumps(ident.spot_action)
        if ident.rebalance is not None:
            values["/latest/meta-data/events/recommendations/rebalance"] = json.dumps(ident.rebalance)
        if ident.lifecycle_state is not None:
            values["/latest/meta-data/autoscaling/target-lifecycle-state"] = ident.lifecycle_state
        if path in values:
            return 200, values[path].encode(), text
        if path + "/" in values:  # EC2 lists a directory whether or not the path ends with a slash
            return 200, values[path + "/"].encode(), text
        return 404, b"Not Found", "text/html"


def _handler_for(service: MetadataService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "EC2ws"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        # The status line, the headers and the body go out as separate small writes; with Nagle's algorithm
        # each answer on a kept-alive connection waited for the client's delayed ACK (tens of ms), where
        # EC2's metadata service answers in well under a millisecond.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
            service.requests.append((self.command, self.path, status))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _common(self) -> bool:
            """Latency and outage knobs; False when the request was already answered."""
            faults = service.faults
            if faults.imds_latency > 0:
                time.sleep(faults.imds_latency)
            if faults.imds_failing():
                self._answer(503, b"Service Unavailable", "text/html")
                return False
            return True

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if not self._common():
                return
            if self.path != "/latest/api/token" or service.faults.imds_mode == "v1-only":
                self._answer(404, b"Not Found", "text/html")
                return
            if self.headers.get("X-Forwarded-For"):
                # EC2 refuses token requests that went through a proxy.
                self._answer(403, b"Forbidden", "text/html")
                return
            raw_ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            try:
                ttl = int(raw_ttl)
            except ValueError:
                ttl = 0
            if not 1 <= ttl <= MAX_TOKEN_TTL:
                self._answer(400, b"Bad Request", "text/html")
                return
            self._answer(200, service.new_token(ttl).encode())

        def do_GET(self) -> None:
            if not self._common():
                return
            mode = service.faults.imds_mode
            token = self.headers.get("X-aws-ec2-metadata-token")
            if mode != "v1-only":
                if token is not None and not service.token_valid(token):
                    self._answer(401, b"Unauthorized", "text/html")
                    return
                if token is None and mode == "v2":
                    self._answer(401, b"Unauthorized", "text/html")
                    return
            status, body, content_type = service.lookup(self.path.split("?", 1)[0])
            self._answer(status, body, content_type)

    return Handler


def port_is_closed(port: int) -> bool:
    """True when nothing accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0
