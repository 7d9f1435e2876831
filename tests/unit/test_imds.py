"""The IMDS client against a minimal metadata server on 127.0.0.1 (the lab's full one is tested elsewhere)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from snaptastic_boot.errors import MetadataUnavailable
from snaptastic_boot.system import imds
from snaptastic_boot.system.imds import ImdsClient

PATHS = {
    "/latest/meta-data/instance-id": "i-0abc",
    "/latest/meta-data/placement/availability-zone": "eu-west-1b",
    "/latest/meta-data/instance-type": "m6i.large",
    "/latest/user-data": '{"role": "solr"}',
}
DOCUMENT = {"instanceId": "i-0abc", "region": "eu-west-1", "availabilityZone": "eu-west-1b", "instanceType": "m6i.large"}


class Server:
    def __init__(self) -> None:
        self.token_status = 200
        self.require_token = True
        self.document = True
        self.delay = 0.0
        self.get_status = 0  # answer every GET with this status when set
        self.tokens: list[str] = []
        self.seen: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                server.seen.append(("PUT", self.path))
                time.sleep(server.delay)
                if self.path != "/latest/api/token" or server.token_status != 200:
                    return self._send(server.token_status if self.path == "/latest/api/token" else 404)
                if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self._send(400)
                token = f"token-{len(server.tokens)}"
                server.tokens.append(token)
                self._send(200, token)

            def do_GET(self) -> None:
                server.seen.append(("GET", self.path))
                time.sleep(server.delay)
                if server.get_status:
                    return self._send(server.get_status)
                if server.require_token and self.headers.get("X-aws-ec2-metadata-token") not in server.tokens:
                    return self._send(401)
                if self.path == "/latest/dynamic/instance-identity/document" and server.document:
                    return self._send(200, json.dumps(DOCUMENT))
                if self.path in PATHS:
                    return self._send(200, PATHS[self.path])
                self._send(404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()


def test_imdsv2_token_then_identity_document(server: Server) -> None:
    client = ImdsClient(server.url, sleeps=())
    meta = client.instance_metadata()
    assert (meta.instance_id, meta.region, meta.availability_zone, meta.instance_type) == ("i-0abc", "eu-west-1", "eu-west-1b", "m6i.large")
    assert client.version == "v2" and client.user_data() == b'{"role": "solr"}'
    assert server.seen[0] == ("PUT", "/latest/api/token") and len(server.tokens) == 1


def test_single_paths_when_there_is_no_identity_document(server: Server) -> None:
    server.document = False
    meta = ImdsClient(server.url, sleeps=()).instance_metadata()
    assert (meta.instance_id, meta.region, meta.availability_zone) == ("i-0abc", "eu-west-1", "eu-west-1b")


def test_imdsv1_only_where_tokens_are_not_supported(server: Server) -> None:
    server.token_status = 405
    server.require_token = False
    client = ImdsClient(server.url, sleeps=())
    assert client.instance_metadata().instance_id == "i-0abc" and client.version == "v1"


def test_expired_token_is_renewed(server: Server) -> None:
    client = ImdsClient(server.url, sleeps=(0.01,))
    client.instance_metadata()
    server.tokens.clear()  # the service forgot every token, as after a restart
    assert client.user_data() == b'{"role": "solr"}'
    assert len(server.tokens) == 1


def test_403_fails_fast(server: Server) -> None:
    server.token_status = 403
    with pytest.raises(MetadataUnavailable, match="403"):
        ImdsClient(server.url, sleeps=(5.0,)).instance_metadata()


def test_no_userdata_is_none(server: Server) -> None:
    saved = PATHS.pop("/latest/user-data")
    try:
        assert ImdsClient(server.url, sleeps=()).user_data() is None
    finally:
        PATHS["/latest/user-data"] = saved


def test_unreachable_is_environment_error_after_bounded_retries() -> None:
    client = ImdsClient("http://127.0.0.1:9/", sleeps=(0.01, 0.01))
    with pytest.raises(MetadataUnavailable, match="did not answer"):
        client.instance_metadata()


def test_a_slow_service_gets_longer_to_answer_at_each_retry(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # Scaled down: the service needs 0.3 s, the first timeout is 0.2 s, the next ones longer.
    monkeypatch.setattr(imds, "READ_TIMEOUTS", (0.2, 0.4, 0.6))
    server.delay = 0.3
    client = ImdsClient(server.url, budget=10, sleeps=(0.01,) * 5)
    assert client.instance_metadata().instance_id == "i-0abc"
    before = len(server.seen)
    assert client.user_data() == b'{"role": "solr"}'
    assert len(server.seen) == before + 1  # the next read starts at the timeout that worked


def test_the_total_bound_holds_and_the_status_is_named(server: Server) -> None:
    server.get_status = 503
    started = time.monotonic()
    with pytest.raises(MetadataUnavailable, match="HTTP 503") as caught:
        ImdsClient(server.url, budget=1.0, sleeps=(0.2,) * 20).instance_metadata()
    assert time.monotonic() - started < 1.5
    assert "did not answer" in str(caught.value)
